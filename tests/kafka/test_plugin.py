"""What the Kafka backbone adds to the conformance suite, against the real broker."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from opal_broadcast import (
    AuthenticationFailed,
    BackboneError,
    BackboneUnavailable,
    BackboneURL,
    Broadcast,
    Event,
    Gap,
    InvalidChannel,
    InvalidOption,
    MessageTooLarge,
    Subscriber,
)

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]

FAST: dict[str, Any] = {"connect_timeout": 10.0, "publish_timeout": 5.0}
WAIT = 15.0


def bootstrap(url: str) -> str:
    host = BackboneURL.parse(url).hosts[0]
    return f"{host.host}:{host.port}"


async def next_message(subscriber: Subscriber[Any]) -> str | bytes:
    with anyio.fail_after(WAIT):
        event = await subscriber.get()
    assert isinstance(event, Event)
    return event.message


@asynccontextmanager
async def raw_producer(url: str) -> AsyncIterator[Any]:
    """A plain aiokafka producer: another application, or an encode/broadcaster process."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(url), linger_ms=0)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def topic_partitions(url: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(url))
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["error_code"] == 0, described
    return len(described["partitions"])


async def test_several_bootstrap_servers_with_one_down(
    kafka_url: str, channel: str, refused_port: Callable[[], int]
):
    """kafka://dead,alive and kafka://alive,dead both connect (aiokafka shuffles the list)."""
    alive, dead = bootstrap(kafka_url), f"127.0.0.1:{refused_port()}"
    for servers in (f"{dead},{alive}", f"{alive},{dead}") * 2:
        url = f"kafka://{servers}"
        async with Broadcast(url, share_connection=False, **FAST) as broadcast:
            async with broadcast.subscribe(channel) as subscriber:
                await broadcast.publish(channel, servers)
                assert await next_message(subscriber) == servers


async def test_an_unreachable_cluster_fails_fast_naming_every_server(
    refused_port: Callable[[], int],
):
    """Connection refused everywhere: BackboneUnavailable at once, not after connect_timeout."""
    ports = refused_port(), refused_port()
    started = time.monotonic()
    with pytest.raises(BackboneUnavailable, match="Check that a broker is running") as caught:
        await Broadcast(f"kafka://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}", **FAST).connect()
    assert time.monotonic() - started < 5.0
    assert all(f"127.0.0.1:{port}" in str(caught.value) for port in ports)


async def test_sasl_plain_credentials_from_the_url(kafka_sasl_url: str, channel: str):
    """The SASL_PLAINTEXT/PLAIN listener accepts the userinfo credentials; str(url) masks them."""
    password = BackboneURL.parse(kafka_sasl_url).password
    assert password
    async with Broadcast(kafka_sasl_url, **FAST) as broadcast:
        assert password not in broadcast.url
        async with broadcast.subscribe(channel) as subscriber:
            await broadcast.publish(channel, "over SASL")
            assert await next_message(subscriber) == "over SASL"


async def test_sasl_credentials_from_the_kafka_environment_variables(
    kafka_sasl_url: str, channel: str, monkeypatch: pytest.MonkeyPatch
):
    """KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_PLAIN_USERNAME/PASSWORD are used."""
    parsed = BackboneURL.parse(kafka_sasl_url)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("KAFKA_PLAIN_USERNAME", parsed.username or "")
    monkeypatch.setenv("KAFKA_PLAIN_PASSWORD", parsed.password or "")
    async with Broadcast(f"kafka://{bootstrap(kafka_sasl_url)}", **FAST) as broadcast:
        async with broadcast.subscribe(channel) as subscriber:
            await broadcast.publish(channel, "env")
            assert await next_message(subscriber) == "env"


async def test_wrong_credentials_fail_clearly_without_echoing_the_secret(
    kafka_sasl_url: str, caplog: pytest.LogCaptureFixture
):
    """A refused password is AuthenticationFailed naming the user; the password shows nowhere,
    not even in aiokafka's DEBUG log (which prints SASL/PLAIN's authentication bytes)."""
    parsed = BackboneURL.parse(kafka_sasl_url)
    sentinel = "wr0ng-p%40ss-sentinel"
    url = kafka_sasl_url.replace(f":{parsed.password}@", f":{sentinel}@")
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed) as caught:
        await Broadcast(url, **FAST).connect()
    assert time.monotonic() - started < 5.0
    text = (
        f"{caught.value} {caught.value!r} {caught.value.__cause__!r} {caught.value.__context__!r}"
    )
    assert "refused the credentials of user 'opal'" in text
    assert f"opal:***@{bootstrap(kafka_sasl_url)}" in text
    for form in (sentinel, "wr0ng-p@ss-sentinel", "wr0ng"):
        assert form not in text
        assert form not in caplog.text


async def test_a_security_protocol_the_listener_does_not_speak_is_named(
    kafka_url: str, kafka_sasl_url: str
):
    """PLAINTEXT to a SASL listener, SASL to a PLAINTEXT one, an unoffered mechanism: each
    fails at once with the setting to check, not after connect_timeout."""
    sasl, plain = bootstrap(kafka_sasl_url), bootstrap(kafka_url)
    cases = [
        (f"kafka://{sasl}", BackboneUnavailable, "security_protocol=PLAINTEXT"),
        (f"kafka://opal:pw@{plain}", BackboneError, "does not accept SASL PLAIN"),
        (f"kafka://opal:pw@{sasl}?sasl_mechanism=SCRAM-SHA-256", BackboneError, "SCRAM-SHA-256"),
    ]
    for url, error, text in cases:
        started = time.monotonic()
        with pytest.raises(error, match=text) as caught:
            await Broadcast(url, **FAST).connect()
        assert time.monotonic() - started < 5.0
        assert ":pw@" not in str(caught.value)


async def test_text_and_bytes_keep_their_type(kafka_url: str, channel: str):
    """str arrives as str; bytes as bytes, even when valid UTF-8; other producers' UTF-8 as str."""
    async with (
        Broadcast(kafka_url, **FAST) as broadcast,
        broadcast.subscribe(channel) as subscriber,
    ):
        await broadcast.publish(channel, "text ✓")
        await broadcast.publish(channel, b"ascii bytes")
        await broadcast.publish(channel, b"\xff\x00 binary")
        assert await next_message(subscriber) == "text ✓"
        assert await next_message(subscriber) == b"ascii bytes"
        assert await next_message(subscriber) == b"\xff\x00 binary"
        async with raw_producer(kafka_url) as producer:
            await producer.send_and_wait(channel, b"from broadcaster")
            await producer.send_and_wait(channel, b"\xfe not text")
        assert await next_message(subscriber) == "from broadcaster"
        assert await next_message(subscriber) == b"\xfe not text"


async def test_a_raw_producer_right_after_subscribe_reaches_the_new_topic(
    kafka_url: str, channel: str
):
    """Subscribing creates the topic and fixes the position: the very first record is read."""
    prefix = "opal-test."
    async with Broadcast(kafka_url, topic_prefix=prefix, **FAST) as broadcast:
        async with broadcast.subscribe(channel) as subscriber, raw_producer(kafka_url) as producer:
            await producer.send_and_wait(prefix + channel, b"first")
            assert await next_message(subscriber) == "first"
    assert await topic_partitions(kafka_url, prefix + channel) == 1


async def test_publishing_creates_topics_with_the_partitions_option(kafka_url: str, channel: str):
    """Topics are created explicitly (auto-creation would give one partition); each publisher
    sticks to one partition, so its messages stay in order across a multi-partition topic."""
    options = {**FAST, "partitions": 3}
    async with Broadcast(kafka_url, share_connection=False, **options) as first:
        await first.publish(channel, "creates the topic")
    assert await topic_partitions(kafka_url, channel) == 3
    async with (
        Broadcast(kafka_url, **options) as listener,
        listener.subscribe(channel) as subscriber,
    ):
        publishers = [Broadcast(kafka_url, share_connection=False, **options) for _ in range(4)]
        for publisher in publishers:
            await publisher.connect()
        try:
            for i in range(30):
                for number, publisher in enumerate(publishers):
                    await publisher.publish(channel, f"{number}:{i}")
        finally:
            for publisher in publishers:
                await publisher.disconnect()
        received: dict[str, list[int]] = {}
        for _ in range(30 * len(publishers)):
            sender, sequence = str(await next_message(subscriber)).split(":")
            received.setdefault(sender, []).append(int(sequence))
    assert received == {str(n): list(range(30)) for n in range(len(publishers))}


async def test_unsubscribing_one_channel_loses_nothing_on_the_others(kafka_url: str, channel: str):
    """Each subscribe and unsubscribe re-assigns the one consumer; the other channel keeps its
    position throughout: every message arrives once, in order."""
    keeper, churn, count = channel + "-keep", channel + "-churn", 150
    async with Broadcast(kafka_url, **FAST) as broadcast, broadcast.subscribe(keeper) as subscriber:
        async with Broadcast(kafka_url, share_connection=False, **FAST) as sender:

            async def publish_all() -> None:
                for i in range(count):
                    await sender.publish(keeper, str(i))
                    await anyio.sleep(0.002)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(publish_all)
                for round_ in range(6):
                    async with broadcast.subscribe(churn) as churner:
                        await sender.publish(churn, f"churn {round_}")
                        assert await next_message(churner) == f"churn {round_}"
            got = [int(await next_message(subscriber)) for _ in range(count)]
            assert got == list(range(count))
            await sender.publish(keeper, "last")
            assert await next_message(subscriber) == "last"


async def test_leaving_the_only_channel_at_once_leaves_the_consumer_reading(
    kafka_url: str, channel: str
):
    """Subscribe and leave before the consumer's fetcher has seen the assignment: the next
    subscription still receives (aiokafka's fetcher task dies if it is unsubscribed then)."""
    async with Broadcast(kafka_url, **FAST) as broadcast:
        for round_ in range(3):
            async with broadcast.subscribe(f"{channel}-{round_}"):
                pass
        async with broadcast.subscribe(channel) as subscriber:
            await broadcast.publish(channel, "still reading")
            assert await next_message(subscriber) == "still reading"


async def test_illegal_channels_and_oversized_messages_are_refused_before_sending(
    kafka_url: str, channel: str
):
    """InvalidChannel and MessageTooLarge are raised without sending; the connection stays fine."""
    async with (
        Broadcast(kafka_url, **FAST) as broadcast,
        broadcast.subscribe(channel) as subscriber,
    ):
        for bad in ("has space", "__EventNotifier_ACK:1", "x" * 250):
            with pytest.raises(InvalidChannel, match="rename the channel"):
                await broadcast.publish(bad, "x")
            with pytest.raises(InvalidChannel, match="rename the channel"):
                async with broadcast.subscribe(bad):
                    pass
        with pytest.raises(MessageTooLarge, match="max_request_size"):
            await broadcast.publish(channel, b"x" * (1024 * 1024 + 1))
        await broadcast.publish(channel, "still fine")
        assert await next_message(subscriber) == "still fine"


async def test_a_position_that_no_longer_exists_is_a_gap_on_that_channel_only(
    kafka_url: str, channel: str
):
    """The topic is deleted and created again (its offsets restart at 0) under a live
    subscription: that channel sees a gap and resumes at the end; the other channel and the
    connection are untouched."""
    other = channel + "-other"
    async with Broadcast(kafka_url, **FAST) as broadcast:
        async with (
            broadcast.subscribe(channel, keep_going=True) as subscriber,
            broadcast.subscribe(other) as bystander,
        ):
            for i in range(5):
                await broadcast.publish(channel, str(i))
            assert [await next_message(subscriber) for _ in range(5)] == ["0", "1", "2", "3", "4"]
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(kafka_url))
            await admin.start()
            try:
                await admin.delete_topics([channel])
                async with raw_producer(kafka_url) as producer:
                    with anyio.fail_after(WAIT):
                        while True:  # until the deletion is done and the topic exists anew
                            try:
                                metadata = await producer.send_and_wait(channel, b"anew")
                            except KafkaError:
                                await anyio.sleep(0.2)
                                continue
                            if metadata.offset == 0:
                                break
            finally:
                await admin.close()
            with anyio.fail_after(WAIT):
                marker = await subscriber.get()
            assert isinstance(marker, Gap)
            assert "no longer exists" in marker.reason
            await broadcast.publish(channel, "after")
            with anyio.fail_after(WAIT):
                while await next_message(subscriber) != "after":
                    pass  # "anew" too, if it came after the position was found out of range
            await broadcast.publish(other, "unaffected")
            assert await next_message(bystander) == "unaffected"
            health = broadcast.health()
    assert health.reconnects == 0


async def test_a_replication_factor_the_cluster_cannot_meet_is_an_invalid_option(
    kafka_url: str, channel: str
):
    """The admin client's answer is read code by code: this one names the option to set."""
    async with Broadcast(kafka_url, replication_factor=2, **FAST) as broadcast:
        with pytest.raises(InvalidOption, match=r"with 2 replica\(s\).*'replication_factor'"):
            await broadcast.publish(channel, "x")


@pytest.fixture
def without_create_conn(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """aiokafka as a release without its private ``aiokafka.conn.create_conn`` would be (its
    own modules keep the reference they imported)."""
    import aiokafka.conn  # type: ignore[import-untyped]

    from opal_broadcast_kafka import _create_conn

    monkeypatch.delattr(aiokafka.conn, "create_conn")
    _create_conn._create_conn.cache_clear()
    yield
    _create_conn._create_conn.cache_clear()


@pytest.mark.usefixtures("without_create_conn")
async def test_without_the_private_create_conn_one_warning_and_failed_connects_still_explained(
    kafka_url: str,
    kafka_sasl_url: str,
    channel: str,
    refused_port: Callable[[], int],
    caplog: pytest.LogCaptureFixture,
):
    """The fence: one warning at the first connect; then each server's TCP outcome names the
    servers that refused and those that accepted; connecting itself is unaffected."""
    caplog.set_level(logging.WARNING, logger="opal_broadcast.kafka")
    ports = refused_port(), refused_port()
    url = f"kafka://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"
    for _ in range(2):
        with pytest.raises(BackboneUnavailable, match="Check that a broker is running") as caught:
            await Broadcast(url, **FAST).connect()
        assert all(f"127.0.0.1:{port}" in str(caught.value) for port in ports)
    with pytest.raises(BackboneUnavailable, match="security_protocol=PLAINTEXT"):
        await Broadcast(f"kafka://{bootstrap(kafka_sasl_url)}", **FAST).connect()
    async with Broadcast(kafka_url, **FAST) as broadcast, broadcast.subscribe(channel) as sub:
        await broadcast.publish(channel, "fine")
        assert await next_message(sub) == "fine"
    warnings = [r for r in caplog.records if "create_conn" in r.getMessage()]
    assert len(warnings) == 1, warnings
