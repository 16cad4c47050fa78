"""Publishing: one message becomes one record on the connection's partition of its topic, and
``publish`` returns once the brokers acknowledged it (``acks``)."""

from __future__ import annotations

import asyncio
from typing import Any

from ._driver import kafka_errors
from ._errors import Errors
from ._messages import check_cap, encode
from ._partitions import Partitions
from ._topics import TopicNames

__all__ = ["Publisher"]


class Publisher:
    def __init__(
        self,
        producer: Any,
        topics: TopicNames,
        partitions: Partitions,
        errors: Errors,
        max_request_size: int,
    ) -> None:
        self.producer = producer
        self.topics = topics
        self.partitions = partitions
        self.errors = errors
        self.max_request_size = max_request_size

    async def publish(self, channel: str, message: str | bytes) -> None:
        """Send one message; return once the brokers acknowledged it."""
        topic = self.topics.topic(channel)
        payload, headers = encode(message)
        check_cap(payload, headers, self.max_request_size)
        partition = self.partitions.chosen.get(topic)
        if partition is None:
            partition = await self.partitions.to_publish(topic)
        try:
            sent = await self.producer.send(topic, payload, partition=partition, headers=headers)
        except kafka_errors.KafkaError as exc:
            raise self.errors.publish_error(topic, exc) from exc
        try:
            await sent
        except asyncio.CancelledError:
            # The core's deadline: the message may still go out; nobody will read the outcome.
            sent.add_done_callback(_retrieve)
            raise
        except kafka_errors.KafkaError as exc:
            raise self.errors.publish_error(topic, exc) from exc


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
