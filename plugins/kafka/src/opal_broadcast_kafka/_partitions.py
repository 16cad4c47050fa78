"""Each topic's partitions, learnt once per connection after making sure the topic exists, and
the partition this connection publishes the topic's messages to: one per publisher keeps each
publisher's messages in order, and a seed kept across reconnects keeps that partition too.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from ._cluster import Cluster
from ._driver import kafka_errors
from ._errors import Errors

__all__ = ["Partitions"]


class Partitions:
    def __init__(
        self, producer: Any, cluster: Cluster, errors: Errors, resume_state: dict[str, Any]
    ) -> None:
        self.producer = producer
        self.cluster = cluster
        self.errors = errors
        self.seed: int = resume_state.setdefault("seed", random.getrandbits(31))
        #: topic -> its partitions, sorted
        self.known: dict[str, list[int]] = {}
        #: topic -> the partition this connection publishes to
        self.chosen: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def of(self, topic: str) -> list[int]:
        """The partitions of ``topic``, created first if it does not exist."""
        known = self.known.get(topic)
        if known is not None:
            return known
        async with self._lock:
            known = self.known.get(topic)
            return known if known is not None else await self._learn(topic)

    async def to_publish(self, topic: str) -> int:
        """The partition this connection publishes ``topic``'s messages to."""
        await self.of(topic)
        return self.chosen[topic]

    async def _learn(self, topic: str) -> list[int]:
        await self.cluster.create_topic(topic)
        try:
            partitions: list[int] = sorted(await self.producer.partitions_for(topic))
        except kafka_errors.KafkaError as exc:
            raise self.errors.unavailable(f"find the partitions of {topic!r} on", exc) from exc
        self.known[topic] = partitions
        self.chosen[topic] = partitions[self.seed % len(partitions)]
        return partitions
