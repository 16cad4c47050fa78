"""The test servers really work: a raw client round trip per backbone and per login, and the fault
tools (TCP proxy, session kill, restart) do what they say."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import ssl
import time
import uuid
from urllib.parse import urlsplit

import anyio
import pytest

from tests.services import TcpProxy, kill_redis_clients, terminate_pg_backends

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend():
    """The proxy is asyncio-only, and so are the drivers."""
    return "asyncio"


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_postgres_listen_notify(postgres_url):
    """asyncpg add_listener() receives a pg_notify() sent from another session."""
    import asyncpg

    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(postgres_url)
    sender = await asyncpg.connect(postgres_url)
    try:
        await listener.add_listener("smoke", lambda *args: received.put_nowait(args[3]))
        await sender.execute("SELECT pg_notify('smoke', 'hello')")
        with anyio.fail_after(5):
            assert await received.get() == "hello"
    finally:
        await sender.close()
        await listener.close()


@pytest.mark.postgres
async def test_postgres_password_role(postgres_password_url):
    """The password role logs in with its password and is refused with a wrong one."""
    import asyncpg

    conn = await asyncpg.connect(postgres_password_url)
    try:
        assert await conn.fetchval("SELECT current_user") == "opal_pw"
    finally:
        await conn.close()
    wrong = postgres_password_url.replace(":opal-pw-secret@", ":wrong@")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(wrong)
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(postgres_password_url.replace(":opal-pw-secret@", "@"))


@pytest.mark.postgres
async def test_postgres_tls_verify_full(postgres_tls_url, test_ca):
    """verify-full against the test CA works; the TLS-only role is refused without TLS;
    the client certificate logs in the cert role."""
    import asyncpg

    conn = await asyncpg.connect(postgres_tls_url)
    try:
        assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await conn.close()
    plain = postgres_tls_url.split("?")[0] + "?sslmode=disable"
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(plain)
    cert_url = (
        postgres_tls_url.replace("opal_tls@", "opal_cert@")
        + f"&sslcert={test_ca.client_cert}&sslkey={test_ca.client_key}"
    )
    conn = await asyncpg.connect(cert_url)
    try:
        assert await conn.fetchval("SELECT current_user") == "opal_cert"
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_postgres_terminate_backend(postgres_url, postgres_password_url):
    """terminate_pg_backends() kills the sessions of an application_name, or of a role."""
    import asyncpg

    conn = await asyncpg.connect(postgres_url, server_settings={"application_name": "smoke-kill"})
    terminated = asyncio.Event()
    conn.add_termination_listener(lambda _conn: terminated.set())
    try:
        assert await terminate_pg_backends(application_name="smoke-kill") == 1
        with anyio.fail_after(5):
            await terminated.wait()
        assert conn.is_closed()
        other = await asyncpg.connect(postgres_password_url)
        try:
            assert await terminate_pg_backends(role="opal_pw") == 1
            assert other.is_closed() or await _fails(other.fetchval("SELECT 1"))
        finally:
            await other.close()
    finally:
        await conn.close()


async def _fails(awaitable) -> bool:
    try:
        await awaitable
    except Exception:
        return True
    return False


# --- Redis ------------------------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_pubsub(redis_url):
    """redis-py subscribe/publish round trip."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe("smoke")
        assert (await pubsub.get_message(timeout=2))["type"] == "subscribe"
        assert await client.publish("smoke", b"hello") == 1
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message is not None
        assert message["data"] == b"hello"
    finally:
        await pubsub.aclose()
        await client.aclose()


@pytest.mark.redis
async def test_redis_password_and_acl(redis_password_url, redis_acl_url):
    """Default-user password and ACL user work; a wrong or missing password is refused."""
    import redis.asyncio as aioredis
    from redis.exceptions import AuthenticationError

    for url, user in ((redis_password_url, "default"), (redis_acl_url, "opal")):
        client = aioredis.from_url(url)
        try:
            assert await client.acl_whoami() == user
        finally:
            await client.aclose()
    for url in (
        redis_acl_url.replace(":opal-acl-secret@", ":wrong@"),
        redis_password_url.replace(":opal-default-secret@", "@"),
    ):
        client = aioredis.from_url(url)
        try:
            with pytest.raises(AuthenticationError):
                await client.ping()
        finally:
            await client.aclose()


@pytest.mark.redis
async def test_rediss_with_ca(rediss_url, test_ca):
    """rediss:// verifies the server with the test CA; a client cert is accepted; without the
    CA the handshake fails."""
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError

    host, port = urlsplit(rediss_url).hostname, urlsplit(rediss_url).port
    for extra in (
        {},
        {"ssl_certfile": str(test_ca.client_cert), "ssl_keyfile": str(test_ca.client_key)},
    ):
        client = aioredis.from_url(rediss_url, **extra)
        try:
            assert await client.ping()
        finally:
            await client.aclose()
    client = aioredis.Redis(host=host, port=port, ssl=True, retry=None)  # system CAs only
    try:
        with pytest.raises(RedisConnectionError):
            await client.ping()
    finally:
        await client.aclose()
    context = ssl.create_default_context(cafile=str(test_ca.ca_file))
    stream = await anyio.connect_tcp(host, port, ssl_context=context, tls_standard_compatible=False)
    await stream.aclose()


@pytest.mark.redis
async def test_redis_kill_pubsub_clients(redis_url):
    """kill_redis_clients() closes a subscriber's connection (by type) and a client's (by addr)."""
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError

    client = aioredis.from_url(redis_url)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe("smoke-kill")
        await pubsub.get_message(timeout=2)
        assert await kill_redis_clients(redis_url, client_type="pubsub") >= 1
        info = await client.execute_command("PUBSUB", "NUMSUB", "smoke-kill")
        assert info[1] == 0
        addr = (await client.client_info())["addr"]
        assert await kill_redis_clients(redis_url, addr=addr) == 1
        with pytest.raises(RedisConnectionError):
            await client.ping()
    finally:
        await pubsub.aclose()
        await client.aclose()


@pytest.mark.redis
async def test_redis_restart_client_reconnects(services, redis_url):
    """stop/start Redis: the server is gone meanwhile, then the same client works again."""
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError

    client = aioredis.from_url(redis_url)
    probe = aioredis.from_url(redis_url, retry=None, socket_connect_timeout=1)
    try:
        assert await client.ping()
        await services.astop("redis")
        assert not services.is_up("redis")
        with pytest.raises(RedisConnectionError):
            await probe.ping()
        await services.astart("redis")
        # redis-py's async client does not retry a ConnectionError by default: the pooled
        # connection the server closed fails one command, then the client reconnects.
        with contextlib.suppress(RedisConnectionError):
            await client.ping()
        assert await client.ping()
    finally:
        await probe.aclose()
        await client.aclose()
        if not services.is_up("redis"):
            services.start("redis")


# --- Kafka ------------------------------------------------------------------------------------


def _bootstrap(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2]


async def _produce_consume(bootstrap: str, **security) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"smoke-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **security)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, **security)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        with anyio.fail_after(15):
            record = await consumer.getone()
        assert record.value == b"hello"
    finally:
        await consumer.stop()


@pytest.mark.kafka
async def test_kafka_produce_consume(kafka_url):
    """aiokafka: create a fresh topic, produce, consume from the beginning."""
    await _produce_consume(_bootstrap(kafka_url))


@pytest.mark.kafka
async def test_kafka_sasl_plain(kafka_sasl_url):
    """The SASL/PLAIN listener: the right password works, a wrong one cannot bootstrap."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaConnectionError

    parts = urlsplit(kafka_sasl_url)
    security = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": parts.username,
        "sasl_plain_password": parts.password,
    }
    await _produce_consume(_bootstrap(kafka_sasl_url), **security)
    producer = AIOKafkaProducer(
        bootstrap_servers=_bootstrap(kafka_sasl_url), **{**security, "sasl_plain_password": "wrong"}
    )
    try:
        with pytest.raises(KafkaConnectionError):
            await producer.start()
    finally:
        await producer.stop()


# --- TCP proxy --------------------------------------------------------------------------------


async def _ping(host: str, port: int) -> bytes:
    """One raw RESP PING on a fresh connection."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        return await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.redis
async def test_proxy_pass_and_url(tcp_proxy, redis_acl_url):
    """In pass mode a real client works through the proxy's URL (credentials kept)."""
    import redis.asyncio as aioredis

    async with tcp_proxy(redis_acl_url) as proxy:
        assert proxy.url().startswith(f"redis://opal:opal-acl-secret@127.0.0.1:{proxy.port}/")
        client = aioredis.from_url(proxy.url())
        try:
            assert await client.acl_whoami() == "opal"
            assert proxy.connections == 1
        finally:
            await client.aclose()


@pytest.mark.redis
async def test_proxy_cut_resets_and_refuses(tcp_proxy, redis_url):
    """cut() resets open connections; with refuse_new, connecting fails until resume()."""
    async with tcp_proxy(redis_url) as proxy:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        try:
            writer.write(b"PING\r\n")
            assert await reader.readline() == b"+PONG\r\n"
            assert proxy.cut(refuse_new=True) == 1
            with anyio.fail_after(2), pytest.raises(ConnectionResetError):
                await reader.read(1)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionResetError):
                await writer.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(proxy.host, proxy.port)
        proxy.resume()
        with anyio.fail_after(2):
            assert await _ping(proxy.host, proxy.port) == b"+PONG\r\n"


@pytest.mark.redis
async def test_proxy_stall_then_resume(tcp_proxy, redis_url):
    """stall() keeps the connection open but forwards nothing; resume() delivers what was held."""
    async with tcp_proxy(redis_url) as proxy:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        try:
            proxy.stall()
            writer.write(b"PING\r\n")
            await writer.drain()
            with pytest.raises(TimeoutError), anyio.fail_after(0.5):
                await reader.readline()
            assert not reader.at_eof()
            proxy.resume()
            with anyio.fail_after(2):
                assert await reader.readline() == b"+PONG\r\n"
        finally:
            writer.close()
            await writer.wait_closed()


@pytest.mark.redis
async def test_proxy_delay(tcp_proxy, redis_url):
    """delay(s) adds latency to each direction."""
    async with tcp_proxy(redis_url) as proxy:
        proxy.delay(0.2)
        begin = time.monotonic()
        with anyio.fail_after(3):
            assert await _ping(proxy.host, proxy.port) == b"+PONG\r\n"
        assert time.monotonic() - begin >= 0.4
        proxy.resume()


def test_proxy_for_url_parsing():
    """for_url() reads host and port (default port per scheme) and rewrites only the netloc."""
    proxy = TcpProxy.for_url("postgresql://u:p@db.example:6543/x?sslmode=require")
    assert (proxy.target_host, proxy.target_port) == ("db.example", 6543)
    proxy.port = 4242
    assert proxy.url() == "postgresql://u:p@127.0.0.1:4242/x?sslmode=require"
    assert TcpProxy.for_url("kafka://broker").target_port == 9092


@pytest.mark.redis
async def test_proxy_cut_as_connections_arrive_leaves_no_socket_open(
    tcp_proxy, redis_url, unraisable
):
    """A connection accepted just as cut(refuse_new=True) closes the listener is reset, never
    dropped open (asyncio.Server drops it: a ResourceWarning, in whichever test runs then)."""
    async with tcp_proxy(redis_url) as proxy:
        for loop_steps in [0, 1, 2, 3] * 5:  # let the loop get as far as accepting, or not
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex((proxy.host, proxy.port))
            for _ in range(loop_steps):
                await asyncio.sleep(0)
            proxy.cut(refuse_new=True)
            client.close()
            proxy.resume()
        with anyio.fail_after(2):
            assert await _ping(proxy.host, proxy.port) == b"+PONG\r\n"
    gc.collect()
    assert unraisable == []
