"""What subscribers receive (events and gap markers) and the health view of a connection."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Event", "Gap", "Health", "State"]

State = Literal["connecting", "connected", "reconnecting", "restoring", "closed", "failed"]


@dataclass(frozen=True, slots=True)
class Event:
    """A message received on a channel (the same shape as broadcaster's ``Event``)."""

    channel: str
    message: str | bytes


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages on ``channel`` may have been missed.

    ``reason`` says why (backbone lost, subscriber overflow). ``missed`` is the exact number of
    dropped messages when known (overflow), else ``None`` (the backbone does not say).
    """

    channel: str | None
    reason: str
    missed: int | None = None
    at: float = field(default_factory=time.time)

    def describe(self) -> str:
        """One sentence for logs and errors."""
        where = f"on channel {self.channel!r}" if self.channel is not None else "on every channel"
        count = f"{self.missed} message(s)" if self.missed is not None else "messages"
        return (
            f"Gap {where}: {count} may have been missed ({self.reason}). "
            "Subscribe again to resume; resync any state built from earlier messages."
        )


@dataclass(frozen=True)
class Health:
    """A snapshot of a backbone connection, as seen by one process.

    ``state`` is ``connected`` when messages flow; ``reconnecting`` after a loss until the core has
    a new connection; ``restoring`` while it subscribes the channels again on it (publishing and new
    subscriptions already work); ``failed`` if the core's supervision of the connection died (every
    subscription has ended: disconnect and connect again); ``closed`` after the last disconnect.
    ``gaps`` counts gaps since the connection opened. ``rejected`` counts payloads dropped because
    no opal-broadcast publisher wrote them (undecodable, malformed: another client of the backbone
    published them), ``rejected_by_channel`` per channel; they cost subscribers nothing.
    ``measurements``: the backbone's own gauges as its plugin last reported them (PostgreSQL:
    ``postgresql.notification_queue.usage``).
    """

    url: str
    state: State
    since: float
    reconnects: int
    gaps: int
    last_gap: Gap | None
    last_error: str | None
    channels: int
    subscribers: int
    rejected: int = 0
    rejected_by_channel: Mapping[str, int] = field(default_factory=dict)
    measurements: Mapping[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the connection is up."""
        return self.state == "connected"
