"""Test-only faults for the ``memory://`` backbone, so recovery is tested without servers."""

from __future__ import annotations

from .. import _memory


def simulate_memory_loss(url: str, *, stay_down: bool = False) -> None:
    """Drop every connection to the ``memory://`` bus at ``url``, as a server crash would.

    With ``stay_down`` the bus also refuses connections and publishes until
    :func:`restore_memory`; without it, the core reconnects at once.
    """
    _memory.simulate_loss(url, stay_down=stay_down)


def restore_memory(url: str) -> None:
    """End a loss, a freeze or a silence of the ``memory://`` bus at ``url``."""
    _memory.restore(url)


def silence_memory(url: str) -> None:
    """Make new connections to the ``memory://`` bus at ``url`` never complete (a server that
    accepts and never answers) until :func:`restore_memory`."""
    _memory.silence(url)


def freeze_memory(url: str) -> None:
    """Keep connections open but make publishes and liveness probes hang (a half-open link)."""
    _memory.freeze(url)


class MemoryOutage:
    """:class:`BackboneOutage` for ``memory://``: down on ``interrupt()``, back on ``restore()``;
    also :class:`BackboneFreeze`: frozen on ``freeze()``, back on ``thaw()``."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def interrupt(self) -> None:
        """Take the bus down, dropping every connection."""
        simulate_memory_loss(self.url, stay_down=True)

    async def restore(self) -> None:
        """Bring the bus back."""
        restore_memory(self.url)

    async def freeze(self) -> None:
        """Keep every connection open but make it hang."""
        freeze_memory(self.url)

    async def thaw(self) -> None:
        """Bring the bus back."""
        restore_memory(self.url)
