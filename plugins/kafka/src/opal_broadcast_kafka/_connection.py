"""One Kafka connection, as the core sees it: each hook handed to the part that does the job.

    _clients        the producer, the consumer and the admin client: start, stop
    _publisher      publish (with _partitions: topics created, partitions learnt and chosen)
    _subscriptions  which channels the consumer reads, and each partition's position
    _reader         the task that delivers records and moves the positions
    _cluster        topic creation and the liveness probe (the admin client)
    _connect        why a connect failed; _errors: aiokafka's errors as the core's

Imported when the core discovers the backbone; aiokafka is imported when the first connection
opens (see ``_driver``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from opal_broadcast.plugin import BackboneURL, Link

from ._clients import Clients, start_clients
from ._errors import Errors
from ._messages import check_unparsed
from ._options import KafkaConfig, topic_prefix
from ._partitions import Partitions
from ._publisher import Publisher
from ._reader import Reader
from ._subscriptions import Subscriptions
from ._topics import TopicNames, names_for

__all__ = ["KafkaConnection"]


class KafkaConnection:
    """The handle the core passes back to every hook."""

    def __init__(self, link: Link, config: KafkaConfig, clients: Clients, errors: Errors) -> None:
        self.clients = clients
        topics = TopicNames(config.topic_prefix)
        partitions = Partitions(clients.producer, clients.cluster, errors, link.resume_state)
        self.publisher = Publisher(
            clients.producer, topics, partitions, errors, config.max_request_size
        )
        self.subscriptions = Subscriptions(clients.consumer, topics, partitions, errors)
        self.reader = Reader(clients.consumer, link, self.subscriptions, errors)

    @classmethod
    async def open(
        cls, url: BackboneURL, options: Mapping[str, Any], link: Link
    ) -> KafkaConnection:
        """Start the clients, or raise a typed error saying why not; then start reading."""
        config = KafkaConfig.parse(url, options)
        for secret in config.redact.secrets:
            link.keep_secret(secret)
        errors = Errors(str(url), config.redact)
        connection = cls(link, config, await start_clients(url, config, errors), errors)
        connection.subscriptions.adopt(link.resume_state)
        connection.reader.start()
        return connection

    @classmethod
    def check_url(cls, url: BackboneURL, options: Mapping[str, Any]) -> None:
        """Refuse a bad URL or option where the ``Broadcast`` is made (no I/O)."""
        KafkaConfig.parse(url, options)

    @classmethod
    def check_channel(cls, url: BackboneURL, options: Mapping[str, Any], channel: str) -> None:
        """The channel's topic name must be a valid Kafka topic name."""
        names_for(topic_prefix(url, options)).topic(channel)

    @classmethod
    def check_message(
        cls, url: BackboneURL, options: Mapping[str, Any], channel: str, message: str | bytes
    ) -> None:
        """Within ``max_request_size`` (only called while the brokers are unreachable; once
        connected, :meth:`publish` checks)."""
        check_unparsed(url, options, message)

    def publish(self, channel: str, message: str | bytes) -> Awaitable[None]:
        """Send one message; the awaitable ends once the brokers acknowledged it (``acks``)."""
        return self.publisher.publish(channel, message)

    async def subscribe(self, channels: Sequence[str]) -> None:
        await self.subscriptions.subscribe(channels)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        await self.subscriptions.unsubscribe(channels)

    async def probe(self) -> None:
        """One metadata round trip to a broker.

        aiokafka never reports a lost broker: it retries quietly. The core bounds this call with
        its probe timeout, so a stopped or frozen broker becomes a reported gap. A blip aiokafka
        bridges between two probes loses nothing: the consumer goes on from its positions.
        """
        try:
            await self.clients.cluster.check()
        except BaseException:
            self.reader.halt()  # the core reports the loss when this raises or times out
            raise
        # The core only probes once connected and every channel restored.
        self.subscriptions.forget_restorable()

    async def close(self) -> None:
        """Stop reading, then stop the clients (within a bound, see ``_clients``). Never raises."""
        await self.reader.stop()
        await self.clients.stop()
