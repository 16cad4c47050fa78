"""Cluster requests the producer's and consumer's own work does not make: creating topics, and
the liveness probe. They go through the producer's ``AIOKafkaClient`` (its public ``client``), so a
connection costs two sockets per broker, not three as with a separate admin client.

Imported with the driver (see ``_connection``).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import aiokafka.errors as kafka_errors  # type: ignore[import-untyped]
from aiokafka.cluster import ClusterMetadata  # type: ignore[import-untyped]
from aiokafka.protocol.admin import CreateTopicsRequest  # type: ignore[import-untyped]
from aiokafka.protocol.metadata import MetadataRequest  # type: ignore[import-untyped]

from opal_broadcast import BackboneError, BackboneUnavailable, InvalidChannel, InvalidOption

if TYPE_CHECKING:
    from ._options import KafkaConfig

__all__ = ["Cluster", "describe"]

#: Replicas of a topic this plugin creates when ``replication_factor`` is not given (capped by
#: the number of brokers, so a one-broker test cluster works).
DEFAULT_REPLICAS = 3


def describe(exc: BaseException) -> str:
    """``Type: message`` for an error (aiokafka's errors already start with their type)."""
    name, text = type(exc).__name__, str(exc)
    return text if text.startswith(name) else f"{name}: {text}".rstrip(": ")


class Cluster:
    """Topic creation and health checks for one connection."""

    def __init__(self, client: Any, config: KafkaConfig, where: str) -> None:
        self.client = client
        self.config = config
        self.where = where  # the masked URL, for messages

    async def create_topic(self, topic: str) -> None:
        """Create ``topic`` unless it exists (explicitly: racing auto-creation loses messages)."""
        config = self.config
        brokers = len(self.client.cluster.brokers()) or 1
        replicas = config.replication_factor or min(DEFAULT_REPLICAS, brokers)
        request = CreateTopicsRequest(
            [(topic, config.partitions, replicas, [], [])], config.request_timeout_ms, False
        )
        for attempt in range(2):
            response = await self._send(request, prefer_controller=True)
            for _name, code, *rest in response.topic_errors:
                error = kafka_errors.for_code(code)
                if error in (kafka_errors.NoError, kafka_errors.TopicAlreadyExistsError):
                    return
                detail = rest[0] if rest and rest[0] else error.__name__
                if error is kafka_errors.NotControllerError and attempt == 0:
                    await self.client.force_metadata_update()
                    break
                if error is kafka_errors.InvalidTopicError:
                    raise InvalidChannel(
                        f"{self.where} refused the topic name {topic!r}: {detail}. Rename the "
                        "channel (Kafka also refuses names that differ from an existing topic "
                        "only by '.' versus '_')."
                    )
                if error is kafka_errors.InvalidReplicationFactorError:
                    raise InvalidOption(
                        f"{self.where} cannot create {topic!r} with {replicas} replica(s): "
                        f"{detail}. Set the kafka:// option 'replication_factor'."
                    )
                if error in (
                    kafka_errors.TopicAuthorizationFailedError,
                    kafka_errors.ClusterAuthorizationFailedError,
                ):
                    if await self._exists(topic):
                        return  # not ours to create, but somebody did
                    raise BackboneError(
                        f"{self.where} does not allow this user to create the topic {topic!r} "
                        f"({detail}). Create it beforehand, or grant CREATE on it."
                    )
                raise (BackboneUnavailable if error.retriable else BackboneError)(
                    f"{self.where} could not create the topic {topic!r}: {detail}."
                )
        raise BackboneUnavailable(f"{self.where} did not create the topic {topic!r}.")

    async def check(self) -> None:
        """Raise :class:`BackboneUnavailable` unless a broker answers a metadata request. The
        core bounds the wait: a stopped broker refuses at once, a frozen one never answers.

        Nothing is asked about topics: a partition without a leader occurs in every leader
        election, and the consumer keeps its positions through it; that is not a loss.
        """
        await self.metadata([])

    async def metadata(self, topics: list[str]) -> Any:
        """Metadata for ``topics`` (none: just the brokers) from the first broker that answers."""
        response = await self._send(MetadataRequest(topics, False))
        cluster = ClusterMetadata()
        cluster.update_metadata(response)
        if not cluster.brokers():
            raise BackboneUnavailable(f"{self.where} answered without any broker")
        return cluster

    async def _exists(self, topic: str) -> bool:
        return bool((await self.metadata([topic])).partitions_for_topic(topic))

    async def _send(self, request: Any, *, prefer_controller: bool = False) -> Any:
        known = self.client.cluster
        nodes = [broker.nodeId for broker in known.brokers()]
        random.shuffle(nodes)
        if prefer_controller and known.controller is not None:
            nodes.insert(0, known.controller.nodeId)
        failures = []
        for node in dict.fromkeys(nodes):
            try:
                return await self.client.send(node, request)
            except kafka_errors.KafkaError as exc:
                failures.append(f"broker {node}: {describe(exc)}")
        reason = "; ".join(failures) or "no broker is known"
        raise BackboneUnavailable(f"no broker of {self.where} answered ({reason})")
