"""The embedded ``memory://`` backbone: one in-process bus per URL, for tests and single processes.

Every connection to ``memory://name`` in the process joins the same bus, so two ``Broadcast``
instances on one URL see each other (encode/broadcaster's per-instance memory backend cannot serve
fastapi_websocket_pubsub). Use one event loop per bus. :mod:`opal_broadcast.testing` can take a
bus down, bring it back and freeze it, to exercise the core's recovery without servers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from ._contract import CONTRACT_VERSION, BackboneInfo, Link
from ._errors import BackboneUnavailable
from ._hookspecs import hookimpl
from ._options import Options
from ._url import BackboneURL

#: memory:// takes no option of its own (the core takes its timings out of the URL first).
_NO_OPTIONS = Options()


class _Bus:
    def __init__(self) -> None:
        self.connections: set[MemoryConnection] = set()
        self.down = False
        self.frozen = False
        self.silent = False


_buses: dict[str, _Bus] = {}


def bus_name(url: BackboneURL) -> str:
    """The bus a URL joins: its host and path (``memory://`` and ``memory:///`` differ)."""
    return url.hostlist + url.path


def _bus(name: str) -> _Bus:
    return _buses.setdefault(name, _Bus())


class MemoryConnection:
    """One connection to a bus: the channels it listens to, and its link."""

    def __init__(self, bus: _Bus, link: Link, name: str) -> None:
        self.bus = bus
        self.link = link
        self.name = name
        self.channels: set[str] = set()

    @classmethod
    async def open(
        cls, url: BackboneURL, options: Mapping[str, Any], link: Link
    ) -> MemoryConnection:
        _NO_OPTIONS.parse(url, options)
        name = bus_name(url)
        bus = _bus(name)
        if bus.down:
            raise BackboneUnavailable(f"{url} is down (simulated outage).")
        if bus.silent:  # a server that accepts connections and never answers
            await anyio.sleep_forever()
        connection = cls(bus, link, name)
        bus.connections.add(connection)
        return connection

    @classmethod
    def check_url(cls, url: BackboneURL, options: Mapping[str, Any]) -> None:
        """memory:// takes no option: any is refused (``Broadcast()`` calls this)."""
        _NO_OPTIONS.parse(url, options)

    @classmethod
    def check_channel(cls, url: BackboneURL, options: Mapping[str, Any], channel: str) -> None:
        """Any non-empty ``str`` will do (the core checks that much)."""

    @classmethod
    def check_message(
        cls, url: BackboneURL, options: Mapping[str, Any], channel: str, message: str | bytes
    ) -> None:
        """Any ``str`` or ``bytes`` will do (the core checks that much)."""

    async def publish(self, channel: str, message: str | bytes) -> None:
        bus = self.bus
        if bus.down or self not in bus.connections:
            raise BackboneUnavailable(f"memory://{self.name} is down (simulated outage).")
        if bus.frozen:
            await anyio.sleep_forever()
        for peer in list(bus.connections):
            if channel in peer.channels:
                peer.link.deliver(channel, message)

    async def subscribe(self, channels: Sequence[str]) -> None:
        bus = self.bus
        if bus.down or self not in bus.connections:
            raise BackboneUnavailable(f"memory://{self.name} is down (simulated outage).")
        self.channels.update(channels)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        self.channels.difference_update(channels)

    async def probe(self) -> None:
        if self.bus.frozen:
            await anyio.sleep_forever()

    async def close(self) -> None:
        self.bus.connections.discard(self)


@hookimpl
def opal_broadcast_backbone() -> BackboneInfo:
    return BackboneInfo(
        schemes=("memory",),
        contract=CONTRACT_VERSION,
        connection=MemoryConnection,
        capabilities=frozenset({"batch_subscribe"}),
        summary="in-process bus (embedded, for one process)",
    )


def simulate_loss(url: str, *, stay_down: bool) -> None:
    """Drop every connection of the bus (each reports the loss); refuse new ones if ``stay_down``."""
    bus = _bus(bus_name(BackboneURL.parse(url)))
    bus.down = stay_down
    for connection in list(bus.connections):
        bus.connections.discard(connection)
        connection.link.lost("simulated loss of the memory backbone")


def restore(url: str) -> None:
    """Bring the bus back after :func:`simulate_loss`, :func:`freeze` or :func:`silence`."""
    bus = _bus(bus_name(BackboneURL.parse(url)))
    bus.down = bus.frozen = bus.silent = False


def silence(url: str) -> None:
    """New connections never complete (a server that accepts and never answers)."""
    _bus(bus_name(BackboneURL.parse(url))).silent = True


def freeze(url: str) -> None:
    """Keep connections open but carry nothing: publish and probes hang (a half-open link)."""
    _bus(bus_name(BackboneURL.parse(url))).frozen = True
