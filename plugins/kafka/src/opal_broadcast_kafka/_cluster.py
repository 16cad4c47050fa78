"""Topic creation and the liveness probe, through aiokafka's ``AIOKafkaAdminClient``: a third
client beside the producer and the consumer, whose own work neither creates topics nor asks the
brokers anything on demand.

``create_topics`` returns the brokers' answer without raising: each topic's error code is read
here, "already exists" included (it is what every connection after the first one gets).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from opal_broadcast.plugin import BackboneUnavailable

from ._driver import kafka_admin, kafka_errors
from ._errors import Errors, unauthorized

if TYPE_CHECKING:
    from ._options import KafkaConfig

__all__ = ["DEFAULT_REPLICAS", "Cluster"]

#: Replicas of a topic this plugin creates when ``replication_factor`` is not given (capped by
#: the number of brokers, so a one-broker test cluster works).
DEFAULT_REPLICAS = 3


class Cluster:
    """Creates topics and answers the probe for one connection; owns its admin client.

    ``options``: the admin client's keyword arguments. ``producer_client``: the producer's
    ``AIOKafkaClient``, which knows the brokers without asking and can ask each in turn.
    """

    def __init__(
        self, options: dict[str, Any], producer_client: Any, config: KafkaConfig, errors: Errors
    ) -> None:
        self.options = options
        self.producer_client = producer_client
        self.config = config
        self.errors = errors
        self.admin = kafka_admin.AIOKafkaAdminClient(**options)

    async def start(self) -> None:
        await self.admin.start()

    async def close(self) -> None:
        await self.admin.close()

    async def create_topic(self, topic: str) -> None:
        """Create ``topic`` unless it exists (explicitly: racing auto-creation loses messages)."""
        brokers = len(self.producer_client.cluster.brokers()) or 1
        replicas = self.config.replication_factor or min(DEFAULT_REPLICAS, brokers)
        error, detail = await self._create(topic, replicas)
        if error is kafka_errors.NotControllerError:
            # The controller moved since the admin client last read the metadata, which it
            # does not read again on this error: a new client reads it at start.
            await self._renew()
            error, detail = await self._create(topic, replicas)
        if error is None:
            return
        if unauthorized(error) and await self._exists(topic):
            return  # not ours to create, but somebody did
        raise self.errors.creation_refused(topic, error, detail, replicas)

    async def check(self) -> None:
        """Raise :class:`BackboneUnavailable` unless a broker answers a metadata request. The
        core bounds the wait: a stopped broker refuses at once, a frozen one never answers.

        The admin client asks one broker, picked at random, about no topic. If that one is down
        (one of several, in a rolling restart), the producer's client asks every known broker in
        turn, about every topic: costlier, and only then. Nothing is checked about topics: a
        partition without a leader occurs in every leader election, and the consumer keeps its
        positions through it; that is not a loss.
        """
        try:
            await self.admin.describe_topics([])
        except kafka_errors.KafkaError as first:
            try:
                await self.producer_client.fetch_all_metadata()
            except kafka_errors.KafkaError as exc:
                raise BackboneUnavailable(
                    f"no broker of {self.errors.where} answered "
                    f"({self.errors.describe(first).rstrip('.')}; "
                    f"then {self.errors.describe(exc)})"
                ) from exc

    async def _create(self, topic: str, replicas: int) -> tuple[type[Exception] | None, str]:
        """The error the brokers answered for ``topic`` and its text; None if it now exists."""
        new = kafka_admin.NewTopic(topic, self.config.partitions, replicas)
        try:
            response = await self.admin.create_topics(
                [new], timeout_ms=self.config.request_timeout_ms
            )
        except (kafka_errors.KafkaError, asyncio.TimeoutError) as exc:
            raise self.errors.unavailable(f"create the topic {topic!r} on", exc) from exc
        answers = [a for a in response.to_object()["topic_errors"] if a["topic"] == topic]
        if not answers:
            raise BackboneUnavailable(
                f"{self.errors.where} did not say whether it created the topic {topic!r}."
            )
        error: type[Exception] = kafka_errors.for_code(answers[0]["error_code"])
        if error in (kafka_errors.NoError, kafka_errors.TopicAlreadyExistsError):
            return None, ""
        return error, (answers[0].get("error_message") or error.__name__).rstrip(".")

    async def _exists(self, topic: str) -> bool:
        try:
            described = await self.admin.describe_topics([topic])
        except kafka_errors.KafkaError as exc:
            raise self.errors.unavailable(f"describe the topic {topic!r} on", exc) from exc
        return any(d["error_code"] == 0 and d["partitions"] for d in described)

    async def _renew(self) -> None:
        old, self.admin = self.admin, kafka_admin.AIOKafkaAdminClient(**self.options)
        await old.close()
        try:
            await self.admin.start()
        except kafka_errors.KafkaError as exc:
            raise self.errors.unavailable("reconnect the admin client to", exc) from exc
