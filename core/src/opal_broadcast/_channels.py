"""The channel table: which local subscribers each channel has, and whether it is live.

Pure bookkeeping and fan-out, no I/O: the shared reader hands each received message to
:meth:`ChannelTable.deliver`, which queues it for every local subscriber of its channel without
ever waiting (a slow subscriber overflows its own queue, see :mod:`._subscriber`). Gaps go to one
channel's subscribers or to every subscriber. Whether a channel is live on the backbone, and who
is changing that right now, is kept here too; :mod:`._subscriptions` decides when to change it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anyio

from ._events import Event, Gap
from ._subscriber import Subscriber

__all__ = ["Channel", "ChannelTable"]


class Channel:
    """One channel's local subscribers and the state of its backbone subscription."""

    __slots__ = ("busy", "live", "pending", "subscribers")

    def __init__(self) -> None:
        self.subscribers: set[Subscriber[Any]] = set()
        #: Subscribed on the current backbone connection.
        self.live = False
        #: ``subscribe()`` calls waiting for the channel to be live.
        self.pending = 0
        #: Set while a backbone (un)subscribe of this channel runs; set when it ends. Nobody holds
        #: it across a wait for anything else, so nobody can wait on its holder in a cycle.
        self.busy: asyncio.Event | anyio.Event | None = None

    @property
    def wanted(self) -> bool:
        """Someone subscribes or is subscribing to this channel."""
        return bool(self.subscribers or self.pending)


class ChannelTable:
    """Every channel of one shared connection."""

    __slots__ = ("_channels",)

    def __init__(self) -> None:
        self._channels: dict[str, Channel] = {}

    def __iter__(self) -> Iterator[tuple[str, Channel]]:
        return iter(list(self._channels.items()))

    def get(self, channel: str) -> Channel | None:
        """The channel's entry, if anyone is (or was just) subscribed."""
        return self._channels.get(channel)

    def entry(self, channel: str) -> Channel:
        """The channel's entry, made if need be."""
        entry = self._channels.get(channel)
        if entry is None:
            entry = self._channels[channel] = Channel()
        return entry

    def forget_if_unused(self, channel: str, entry: Channel) -> None:
        """Drop ``entry`` once nobody wants it and the backbone no longer carries it."""
        unused = not entry.wanted and not entry.live and entry.busy is None
        if unused and self._channels.get(channel) is entry:
            del self._channels[channel]

    def deliver(self, channel: str, message: str | bytes) -> None:
        """Queue one received message for the channel's local subscribers (never blocks)."""
        entry = self._channels.get(channel)
        if entry is None:
            return
        event = Event(channel, message)
        size = len(message)  # bytes, or characters of text: see _subscriber
        for subscriber in entry.subscribers:
            subscriber.offer(event, size)

    def gap(self, channel: str, gap: Gap) -> bool:
        """Tell the channel's subscribers they may have missed messages. Whether it has any."""
        entry = self._channels.get(channel)
        if entry is None or not entry.subscribers:
            return False
        for subscriber in list(entry.subscribers):
            subscriber.offer_gap(gap)
        return True

    def gap_all(self, gap: Gap) -> None:
        """The connection was lost: no channel is live, every subscriber hears of ``gap``."""
        for channel, entry in self._channels.items():
            entry.live = False
            if entry.subscribers:
                mine = Gap(channel, gap.reason, gap.missed, gap.at)
                for subscriber in list(entry.subscribers):
                    subscriber.offer_gap(mine)

    def close_all(self) -> None:
        """End every subscriber's iteration once it has read what is queued."""
        for entry in self._channels.values():
            for subscriber in list(entry.subscribers):
                subscriber.close()
        self._channels.clear()

    def live_count(self) -> int:
        """How many channels are live on the backbone."""
        return sum(1 for entry in self._channels.values() if entry.live)

    def subscriber_count(self) -> int:
        """How many local subscribers there are, over all channels."""
        return sum(len(entry.subscribers) for entry in self._channels.values())
