"""What the conformance suites share: the fault protocols a plugin's fixtures implement, and
bounded waits (a hang fails a test instead of stalling CI)."""

from __future__ import annotations

from typing import Any, Protocol

import anyio

from .. import Broadcast, Subscriber

__all__ = ["DEADLINE", "BackboneFreeze", "BackboneOutage", "next_event", "until_healthy"]

#: Every wait in the suite is bounded by this many seconds: a hang fails instead of stalling CI.
DEADLINE = 20.0


class BackboneOutage(Protocol):
    """Takes the backbone away and brings it back (a server stop/start, a killed session, ...)."""

    async def interrupt(self) -> None:
        """Make the backbone unavailable; existing connections must break."""

    async def restore(self) -> None:
        """Make the backbone available again."""


class BackboneFreeze(Protocol):
    """Freezes the link: connections stay open and nothing is forwarded, either way (a half-open
    connection after a failover, a firewall dropping packets)."""

    async def freeze(self) -> None:
        """Stop forwarding on every connection, keeping them open."""

    async def thaw(self) -> None:
        """Forward again, and accept new connections."""


async def next_event(subscriber: Subscriber[Any], timeout: float = DEADLINE) -> Any:
    with anyio.fail_after(timeout):
        return await subscriber.get()


async def until_healthy(broadcast: Broadcast) -> None:
    with anyio.fail_after(DEADLINE):
        while not broadcast.health().ok:  # noqa: ASYNC110 - health is a snapshot, not an event
            await anyio.sleep(0.05)
