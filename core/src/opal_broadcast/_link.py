"""The :class:`~opal_broadcast.BackboneLink` the core hands a plugin with each connection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["Link"]


class Link:
    """One connection's way back to its hub; inert once the hub has replaced the connection."""

    __slots__ = ("active", "hub", "lost_early", "resume_state")

    def __init__(self, hub: Hub, resume_state: dict[str, Any]) -> None:
        self.hub = hub
        self.resume_state = resume_state
        self.active = True
        #: A loss reported while the connect hook was still running (the hub checks it after).
        self.lost_early: str | BaseException | None = None

    def deliver(self, channel: str, message: str | bytes) -> bool:
        if self.active:
            hub = self.hub
            hub.channels.deliver(channel, message)
            if hub.telemetry is not None:
                hub.telemetry.consumed(channel)
            return True
        return False

    def keep_secret(self, secret: str) -> None:
        self.hub.redact.keep_secret(secret)

    def gap(self, channel: str, reason: str) -> None:
        if self.active:
            self.hub.channel_gap(channel, reason)

    def reject(self, channel: str, reason: str) -> None:
        if self.active:
            self.hub.rejects.report(str(self.hub.url), channel, self.hub.redact(reason))
            if self.hub.telemetry is not None:
                self.hub.telemetry.rejected(channel)

    def measure(self, name: str, value: float) -> None:
        if self.active:
            self.hub.measurements[name] = value
            if self.hub.telemetry is not None:
                self.hub.telemetry.measured(name)

    def lost(self, reason: str | BaseException) -> None:
        if not self.active:
            return
        if self.hub.link is not self:
            self.lost_early = reason
            return
        self.hub.lost(self, reason)
