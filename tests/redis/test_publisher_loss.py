"""Losing only the publishing connection is no gap: subscribers go on, the next publish reconnects.

The pub/sub connection carries everything subscribers are due, so a CLIENT KILL of the publishing
one (found by the test's client_name and type ``normal``) loses them nothing. Checked on the
server with CLIENT LIST: the pub/sub connection is the same one throughout, exactly one new
publishing connection replaces the killed one, and nothing is left open.
"""

import contextlib
import gc
import uuid

import anyio
import pytest
import redis.asyncio as aioredis

from opal_broadcast import BackboneUnavailable, Broadcast, Event, Gap
from tests.redis.conftest import DEADLINE, FAST
from tests.services import TcpProxy, kill_redis_clients
from tests.services import close_redis_client as close

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture
async def admin(redis_url):
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await close(client)


@pytest.fixture
def name() -> str:
    """A client_name no other test uses: it finds this test's connections in CLIENT LIST."""
    return f"opal-pl-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def channel() -> str:
    return f"pub-loss-{uuid.uuid4().hex[:10]}"


async def connections(admin: aioredis.Redis, name: str, kind: str) -> list[dict]:
    """This test's connections of ``kind`` (``"normal"``: publishing, ``"pubsub"``)."""
    return [c for c in await admin.client_list(_type=kind) if c.get("name") == name]


async def only_connection(admin: aioredis.Redis, name: str, kind: str) -> dict:
    """The one connection of ``kind``, once there is exactly one (a killed one may linger)."""
    with anyio.fail_after(DEADLINE):
        while len(found := await connections(admin, name, kind)) != 1:
            await anyio.sleep(0.02)
    return found[0]


async def kill_publishing_connection(redis_url: str, admin: aioredis.Redis, name: str) -> str:
    """CLIENT KILL this test's publishing connection; its id."""
    publishing = await only_connection(admin, name, "normal")
    assert await kill_redis_clients(redis_url, addr=publishing["addr"]) == 1
    return str(publishing["id"])


async def test_killing_the_publishing_connection_is_no_gap(
    redis_url, admin, name, channel, unraisable
):
    """A steady publisher, a CLIENT KILL of its connection: no gap, every publish that returned
    is delivered once and in order, and one that failed failed typed."""
    gaps: list[Gap] = []
    sent: list[str] = []
    failed: list[str] = []
    received: list[str] = []
    killed = anyio.Event()
    options = {**FAST, "client_name": name, "on_gap": gaps.append}
    async with Broadcast(redis_url, **options) as broadcast:
        async with (
            broadcast.subscribe(channel) as default,
            broadcast.subscribe(channel, keep_going=True) as keeper,
        ):
            pubsub = await only_connection(admin, name, "pubsub")

            async def publish_steadily() -> None:
                count = after_kill = 0
                while after_kill < 50:
                    message = str(count)
                    count += 1
                    try:
                        await broadcast.publish(channel, message)
                    except BackboneUnavailable:  # in flight as the connection died
                        failed.append(message)
                    else:
                        sent.append(message)
                        after_kill += killed.is_set()
                    await anyio.sleep(0.002)
                await broadcast.publish(channel, "stop")

            async def read() -> None:
                async for event in default:  # a gap would end this with SubscriptionGap
                    if event.message == "stop":
                        return
                    received.append(str(event.message))

            with anyio.fail_after(DEADLINE):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(read)
                    tasks.start_soon(publish_steadily)
                    while len(sent) < 20:
                        await anyio.sleep(0.005)
                    killed_id = await kill_publishing_connection(redis_url, admin, name)
                    killed.set()
                kept: list[Event | Gap] = []
                while not kept or kept[-1] != Event(channel, "stop"):
                    kept.append(await keeper.get())

            assert len(failed) <= 1  # one publish at a time: at most one was in flight
            assert all(isinstance(item, Event) for item in kept)
            assert received == sorted(set(received), key=int)  # in order, no duplicates
            assert set(sent) <= set(received) <= set(sent) | set(failed)
            assert [item.message for item in kept[:-1]] == received  # type: ignore[union-attr]
            assert (await only_connection(admin, name, "pubsub"))["id"] == pubsub["id"]
            assert (await only_connection(admin, name, "normal"))["id"] != killed_id
        health = broadcast.health()
    assert (health.gaps, health.reconnects, gaps) == (0, 0, [])
    with anyio.fail_after(DEADLINE):
        while await connections(admin, name, "normal") + await connections(admin, name, "pubsub"):
            await anyio.sleep(0.02)
    gc.collect()
    assert unraisable == []


async def test_publishes_racing_to_a_killed_connection_open_one_new_one(
    redis_url, admin, name, channel
):
    """50 publishes find the publishing connection dead at once: one reconnects, all go through."""
    async with (
        Broadcast(redis_url, client_name=name, **FAST) as broadcast,
        broadcast.subscribe(channel) as subscriber,
    ):
        await broadcast.publish(channel, "before")
        killed_id = await kill_publishing_connection(redis_url, admin, name)
        await anyio.sleep(0.05)  # the EOF has arrived: every publish below meets a broken wire
        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tasks:
                for number in range(50):
                    tasks.start_soon(broadcast.publish, channel, str(number))
            received = {(await subscriber.get()).message for _ in range(51)}
        assert received == {"before", *map(str, range(50))}
        assert (await only_connection(admin, name, "normal"))["id"] != killed_id
        assert len(await connections(admin, name, "normal")) == 1
        assert broadcast.health().gaps == 0


async def test_a_reconnect_cancelled_at_any_point_leaves_nothing_open(
    redis_url, admin, name, channel, unraisable
):
    """Publishes cancelled while they open a new publishing connection: no socket is left open,
    the next publish opens one that works, and subscribers saw no gap."""
    async with (
        Broadcast(redis_url, client_name=name, **FAST) as broadcast,
        broadcast.subscribe(channel) as subscriber,
    ):
        for step in range(30):
            for connection in await connections(admin, name, "normal"):
                await kill_redis_clients(redis_url, addr=connection["addr"])  # 0 if it just closed
            await anyio.sleep(0.01)
            # BackboneUnavailable: sent before the client saw the EOF, so it was in flight.
            with anyio.move_on_after(step * 0.0003), contextlib.suppress(BackboneUnavailable):
                await broadcast.publish(channel, "maybe")
        await broadcast.publish(channel, "after")
        with anyio.fail_after(DEADLINE):
            while (await subscriber.get()).message != "after":
                pass
        await only_connection(admin, name, "normal")
        await only_connection(admin, name, "pubsub")
        assert broadcast.health().gaps == 0
    gc.collect()
    assert unraisable == []


async def test_a_publish_in_flight_on_a_killed_connection_fails_typed(
    redis_url, admin, name, channel, proxy_to
):
    """PUBLISH sent, no reply yet, connection killed: BackboneUnavailable (maybe delivered), no gap."""
    proxy: TcpProxy = proxy_to(redis_url)
    await proxy.start()
    options = {**FAST, "client_name": name, "probe_timeout": 5.0, "publish_timeout": 5.0}
    async with (
        Broadcast(proxy.url(), **options) as broadcast,
        broadcast.subscribe(channel) as subscriber,
    ):
        await broadcast.publish(channel, "before")
        publishing = await only_connection(admin, name, "normal")
        proxy.delay(0.5)  # the PUBLISH below reaches Redis only after the kill
        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tasks:

                async def kill_soon() -> None:
                    await anyio.sleep(0.1)
                    assert await kill_redis_clients(redis_url, addr=publishing["addr"]) == 1

                tasks.start_soon(kill_soon)
                with pytest.raises(BackboneUnavailable, match="may or may not"):
                    await broadcast.publish(channel, "in flight")
        proxy.resume()
        await broadcast.publish(channel, "after")
        with anyio.fail_after(DEADLINE):
            got = [(await subscriber.get()).message]
            while got[-1] != "after":
                got.append((await subscriber.get()).message)
        assert got in (["before", "after"], ["before", "in flight", "after"])
        assert broadcast.health().gaps == 0
        assert broadcast.health().reconnects == 0


async def test_the_new_publishing_connection_authenticates_over_tls(
    rediss_password_url, name, channel
):
    """Over TLS with a password, the replacement does the whole handshake the first one did."""
    admin = aioredis.Redis.from_url(rediss_password_url, decode_responses=True)
    try:
        async with (
            Broadcast(rediss_password_url, client_name=name, **FAST) as broadcast,
            broadcast.subscribe(channel) as subscriber,
        ):
            await broadcast.publish(channel, "before")
            killed_id = await kill_publishing_connection(rediss_password_url, admin, name)
            await anyio.sleep(0.05)
            await broadcast.publish(channel, "after")
            with anyio.fail_after(DEADLINE):
                assert [(await subscriber.get()).message for _ in range(2)] == ["before", "after"]
            assert (await only_connection(admin, name, "normal"))["id"] != killed_id
            assert broadcast.health().gaps == 0
    finally:
        await close(admin)
