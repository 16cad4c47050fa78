"""The URL forms and settings broadcaster 0.3.1 and permit-broadcaster 0.2.7 document, on the real
servers: each one works here as it did there (one test per documented form)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from opal_broadcast import BackboneURL, Broadcast

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def channel() -> str:
    return f"chatroom-{uuid.uuid4().hex[:8]}"


async def round_trip(url: str, channel: str) -> str:
    async with Broadcast(url) as broadcast, broadcast.subscribe(channel) as subscriber:
        await broadcast.publish(channel, "hello")
        event = await asyncio.wait_for(subscriber.get(), 20)
        return str(event.message)


async def test_redis_url(redis_url, channel):
    """broadcaster: ``Broadcast("redis://localhost:6379")``."""
    assert await round_trip(redis_url, channel) == "hello"


async def test_rediss_url(rediss_url, channel):
    """broadcaster: ``rediss://`` (Redis over TLS) is served by the same backend as redis://."""
    assert rediss_url.startswith("rediss://")
    assert await round_trip(rediss_url, channel) == "hello"


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+asyncpg"])
async def test_postgres_and_postgresql_urls(postgres_url, channel, scheme):
    """broadcaster: both ``postgres://`` and ``postgresql://`` name the Postgres backend; the
    SQLAlchemy form OPAL users paste, ``postgresql+asyncpg://``, is the same driver."""
    url = f"{scheme}://{postgres_url.partition('://')[2]}"
    assert await round_trip(url, channel) == "hello"


async def test_kafka_url(kafka_url, channel):
    """broadcaster: ``Broadcast("kafka://localhost:9092")``."""
    assert await round_trip(kafka_url, channel) == "hello"


async def test_kafka_url_with_a_list_of_brokers(kafka_url, channel):
    """permit-broadcaster: ``kafka://broker_1:9092,broker_2:9092``; broadcaster 0.3.1's
    ``KafkaBackend(urls=[...])`` becomes the same list in one URL."""
    broker = BackboneURL.parse(kafka_url).hostlist
    assert await round_trip(f"kafka://{broker},{broker}", channel) == "hello"


async def test_kafka_sasl_from_permit_broadcasters_environment_variables(
    kafka_sasl_url, channel, monkeypatch
):
    """permit-broadcaster: KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_PLAIN_USERNAME and
    KAFKA_PLAIN_PASSWORD with a bare ``kafka://host`` URL."""
    parsed = BackboneURL.parse(kafka_sasl_url)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("KAFKA_PLAIN_USERNAME", parsed.username or "")
    monkeypatch.setenv("KAFKA_PLAIN_PASSWORD", parsed.password or "")
    assert await round_trip(f"kafka://{parsed.hostlist}", channel) == "hello"


async def test_postgres_pool_size_from_permit_broadcasters_variable(
    postgres_url, channel, monkeypatch
):
    """permit-broadcaster: BROADCASTER_PG_MAX_POOL_SIZE bounds the publishing connections; 50
    concurrent publishes with it at 1 use one, and every message arrives."""
    monkeypatch.setenv("BROADCASTER_PG_MAX_POOL_SIZE", "1")
    app = f"compat-{uuid.uuid4().hex[:8]}"
    url = f"{postgres_url}?application_name={app}"
    async with Broadcast(url) as broadcast, broadcast.subscribe(channel) as subscriber:
        await asyncio.gather(*(broadcast.publish(channel, str(n)) for n in range(50)))
        received = {str((await asyncio.wait_for(subscriber.get(), 10)).message) for _ in range(50)}
        assert received == {str(n) for n in range(50)}
        admin = await asyncpg.connect(postgres_url)
        try:
            publishing = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                f"{app}/publish",
            )
        finally:
            await admin.close()
    assert publishing == 1
