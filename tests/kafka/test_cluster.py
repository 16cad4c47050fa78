"""Topic creation's error codes and the probe's fallback, against stand-ins for aiokafka's admin
client (the one-broker test cluster cannot move its controller or lose one broker of several)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from aiokafka.errors import KafkaError, NodeNotReadyError  # type: ignore[import-untyped]

from opal_broadcast import BackboneError, BackboneUnavailable, BackboneURL, InvalidOption
from opal_broadcast_kafka._cluster import Cluster
from opal_broadcast_kafka._errors import Errors
from opal_broadcast_kafka._options import KafkaConfig

pytestmark = pytest.mark.anyio

WHERE = "kafka://127.0.0.1:1"
NO_ERROR, CLUSTER_AUTHORIZATION_FAILED, INVALID_REPLICATION_FACTOR = 0, 31, 38
TOPIC_ALREADY_EXISTS, NOT_CONTROLLER = 36, 41


class Response:
    def __init__(self, topic: str, code: int) -> None:
        self.answer = {"topic": topic, "error_code": code, "error_message": None}

    def to_object(self) -> dict[str, Any]:
        return {"throttle_time_ms": 0, "topic_errors": [self.answer]}


class Admin:
    """Answers create_topics with the next of ``codes``; describes topics as ``exists`` says."""

    made: ClassVar[list[Admin]] = []
    #: the codes of the next client made
    next_codes: ClassVar[list[int]] = []

    def __init__(self, **options: Any) -> None:
        self.codes = list(Admin.next_codes)
        self.exists = False
        self.describe_error: Exception | None = None
        self.started = self.closed = False
        Admin.made.append(self)

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def create_topics(self, new_topics: list[Any], timeout_ms: int) -> Response:
        return Response(new_topics[0].name, self.codes.pop(0))

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        if self.describe_error is not None:
            raise self.describe_error
        return [
            {"topic": t, "error_code": 0, "partitions": [{}] if self.exists else []} for t in topics
        ]


class ProducerClient:
    """The producer's client: one broker known; fetch_all_metadata fails if ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.cluster = self
        self.asked = 0

    def brokers(self) -> set[int]:
        return {1}

    async def fetch_all_metadata(self) -> None:
        self.asked += 1
        if self.down:
            raise KafkaError("Unable to get cluster metadata over all known brokers")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def client() -> ProducerClient:
    return ProducerClient()


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch, client: ProducerClient) -> Cluster:
    monkeypatch.setattr("aiokafka.admin.AIOKafkaAdminClient", Admin)
    Admin.made.clear()
    Admin.next_codes = []
    config = KafkaConfig.parse(BackboneURL.parse(WHERE), {})
    return Cluster({}, client, config, Errors(WHERE, config.redact))


async def test_a_topic_that_already_exists_is_fine(cluster: Cluster):
    """create_topics returns the error codes without raising: "already exists" is success."""
    Admin.made[0].codes = [NO_ERROR, TOPIC_ALREADY_EXISTS]
    await cluster.create_topic("a")
    await cluster.create_topic("a")


async def test_a_moved_controller_gets_a_new_admin_client(cluster: Cluster):
    """NOT_CONTROLLER: the old client is closed and a new one, which reads where the controller
    is now, asks again."""
    first = Admin.made[0]
    first.codes, Admin.next_codes = [NOT_CONTROLLER], [NO_ERROR]
    await cluster.create_topic("a")
    second = Admin.made[1]
    assert (first.closed, second.started, cluster.admin) == (True, True, second)


async def test_refusals_are_typed(cluster: Cluster):
    """A replication factor the cluster cannot meet is InvalidOption; no permission to create is
    BackboneError, unless the topic exists anyway."""
    admin = Admin.made[0]
    admin.codes = [INVALID_REPLICATION_FACTOR, CLUSTER_AUTHORIZATION_FAILED]
    with pytest.raises(InvalidOption, match="replication_factor"):
        await cluster.create_topic("a")
    with pytest.raises(BackboneError, match="grant CREATE"):
        await cluster.create_topic("a")
    admin.codes, admin.exists = [CLUSTER_AUTHORIZATION_FAILED], True
    await cluster.create_topic("a")


async def test_the_probe_asks_every_broker_when_the_first_does_not_answer(
    cluster: Cluster, client: ProducerClient
):
    """The admin client asks one broker at random; if it is down (one of several), the probe
    holds as long as another answers the producer's client."""
    await cluster.check()
    assert client.asked == 0
    Admin.made[0].describe_error = NodeNotReadyError("node 2 is not ready")
    await cluster.check()
    assert client.asked == 1
    client.down = True
    with pytest.raises(BackboneUnavailable, match=r"no broker of .* answered"):
        await cluster.check()
