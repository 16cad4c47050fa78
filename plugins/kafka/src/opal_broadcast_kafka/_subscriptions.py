"""What the consumer reads, and from where: the subscribed channels and each partition's
position, which survive the core's reconnects.

One consumer without a group (``group_id=None``) is assigned every partition of every
subscribed topic by hand: every process reads every message, with no rebalances and no commits.
Each partition's position (the next offset to deliver) is kept in ``positions``, which is the
core's ``link.resume_state``: it is fixed before ``subscribe()`` returns (the end offset, so a
message published afterwards is never missed), moved past every delivered record by the
reader, and after a loss the new connection seeks back to it, so a message published after the
broker returns, even before this process has reconnected, is still delivered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._driver import aiokafka, kafka_errors
from ._errors import Errors
from ._partitions import Partitions
from ._topics import TopicNames

__all__ = ["Subscriptions"]


class Subscriptions:
    def __init__(
        self, consumer: Any, topics: TopicNames, partitions: Partitions, errors: Errors
    ) -> None:
        self.consumer = consumer
        self.topics = topics
        self.partitions = partitions
        self.errors = errors
        #: subscribed topic -> its channel
        self.channels: dict[str, str] = {}
        #: next offset to deliver, per assigned partition (shared with ``link.resume_state``)
        self.positions: dict[Any, int] = {}
        #: positions a previous connection left; taken by the subscribes that restore channels
        self.restorable: dict[Any, int] = {}

    def adopt(self, state: dict[str, Any]) -> None:
        """Take over the positions a previous connection left in ``state`` (its resume state).

        What it delivered up to (its positions) and what it had not restored yet (its
        restorables) become this one's restorables. Done only once connected: a failed attempt
        must not lose them.
        """
        restorable: dict[Any, int] = state.get("restorable") or {}
        restorable.update(state.get("positions") or {})
        state["restorable"] = self.restorable = restorable
        state["positions"] = self.positions

    def forget_restorable(self) -> None:
        """Drop the positions nobody took back: their channels were left during the outage
        (starting there later would replay). Called once every channel was restored."""
        self.restorable.clear()

    async def subscribe(self, channels: Sequence[str]) -> None:
        """Read every partition of each channel's topic from a fixed position, then return."""
        for channel in channels:
            await self._subscribe(channel)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        """Stop reading the channels' partitions; the other channels keep their positions."""
        topics = {self.topics.topic(channel) for channel in channels}
        removed = {topic for topic in topics if self.channels.pop(topic, None) is not None}
        if not removed:
            return
        for tp in [tp for tp in self.positions if tp.topic in removed]:
            del self.positions[tp]
        self._assign()

    async def _subscribe(self, channel: str) -> None:
        topic = self.topics.topic(channel)
        wanted = [aiokafka.TopicPartition(topic, p) for p in await self.partitions.of(topic)]
        starts = {tp: self.positions[tp] for tp in wanted if tp in self.positions}
        resumed = {tp: self.restorable[tp] for tp in wanted if tp in self.restorable}
        missing = [tp for tp in wanted if tp not in starts and tp not in resumed]
        if missing:
            try:
                ends = await self.consumer.end_offsets(missing)
            except kafka_errors.KafkaError as exc:
                raise self.errors.unavailable(f"read the end offsets of {topic!r} on", exc) from exc
            starts.update(ends)
        # No await from here on: the channel, the positions and the assignment change together.
        for tp, offset in resumed.items():
            self.restorable.pop(tp, None)
            starts.setdefault(tp, offset)
        self.channels[topic] = channel
        self.positions.update(starts)
        self._assign()

    def _assign(self) -> None:
        # assign() replaces the whole assignment and forgets every position: seek them all back
        # (records fetched but not delivered yet are simply fetched again). No partition left is
        # an empty assignment, never unsubscribe(): aiokafka's fetcher task dies (and reading
        # stops for good, silently) when an unsubscribe() comes right after an assign().
        consumer = self.consumer
        consumer.assign(list(self.positions))
        for tp, offset in self.positions.items():
            consumer.seek(tp, offset)
