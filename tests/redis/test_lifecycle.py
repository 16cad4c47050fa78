"""Connections are shared, closed, and never left half-used: checked on the server with CLIENT LIST."""

import uuid

import anyio
import pytest
import redis.asyncio as aioredis

from opal_broadcast import BackboneUnavailable, Broadcast
from tests.redis.conftest import DEADLINE
from tests.services import close_redis_client as close

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture
async def admin(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await close(client)


async def named_connections(admin: aioredis.Redis, name: str) -> list[dict]:
    return [c for c in await admin.client_list() if c.get("name") == name]


async def until_connections(admin: aioredis.Redis, name: str, count: int) -> None:
    with anyio.fail_after(DEADLINE):
        while len(await named_connections(admin, name)) != count:
            await anyio.sleep(0.02)


async def numsub(admin: aioredis.Redis, channel: str) -> int:
    return int(dict(await admin.pubsub_numsub(channel))[channel.encode()])


async def test_one_shared_pair_of_connections_closed_by_the_last_user(redis_url, admin):
    """Three Broadcasts on one URL use two server connections (publish + pub/sub), gone at the end."""
    name = f"opal-{uuid.uuid4().hex[:8]}"
    async with Broadcast(redis_url, client_name=name), Broadcast(redis_url, client_name=name):
        async with Broadcast(redis_url, client_name=name):
            connections = await named_connections(admin, name)
            assert len(connections) == 2
        assert len(await named_connections(admin, name)) == 2
    await until_connections(admin, name, 0)


async def test_leaving_a_channel_unsubscribes_it_on_the_server(redis_url, admin):
    """The last local subscriber leaving sends UNSUBSCRIBE; PUBSUB NUMSUB drops to 0."""
    channel = f"life-{uuid.uuid4().hex[:8]}"
    async with Broadcast(redis_url) as broadcast:
        async with broadcast.subscribe(channel), broadcast.subscribe(channel):
            assert await numsub(admin, channel) == 1  # one backbone subscription, two local
        assert await numsub(admin, channel) == 0


async def test_a_cancelled_subscribe_is_undone_and_the_connection_stays_in_step(redis_url, admin):
    """Cancelled between SUBSCRIBE and its confirmation: no stray subscription, replies stay matched."""
    channel = f"life-{uuid.uuid4().hex[:8]}"
    async with Broadcast(redis_url) as broadcast:
        for _ in range(20):
            with anyio.CancelScope() as scope:
                scope.cancel()
                async with broadcast.subscribe(channel):
                    pass
            with anyio.move_on_after(0):
                async with broadcast.subscribe(channel):
                    pass
        async with broadcast.subscribe(channel) as subscriber:
            await broadcast.publish(channel, "still in step")
            with anyio.fail_after(DEADLINE):
                assert (await subscriber.get()).message == "still in step"
        with anyio.fail_after(DEADLINE):
            while await numsub(admin, channel) != 0:
                await anyio.sleep(0.02)


async def test_connect_timeout_leaves_no_connection_behind(redis_url, proxy_to):
    """A handshake that never answers is cut by connect_timeout: typed error, sockets closed."""
    proxy = proxy_to(redis_url)
    await proxy.start()
    proxy.stall()
    with anyio.fail_after(DEADLINE), pytest.raises(BackboneUnavailable, match=r"within 0\.5 s"):
        async with Broadcast(proxy.url(), connect_timeout=0.5):
            pass
    assert proxy.connections >= 2  # the stalled proxy holds our resets back until it resumes
    proxy.resume()
    with anyio.fail_after(DEADLINE):
        while proxy.connections:  # a socket we had leaked would keep its link open
            await anyio.sleep(0.02)
    async with Broadcast(proxy.url(), connect_timeout=5) as broadcast:
        await broadcast.publish("x", "works once the proxy forwards again")


async def test_unix_socket(unix_socket_redis):
    """unix:///path/to/redis.sock with db= reaches a server that has no TCP port at all."""
    url = f"unix://{unix_socket_redis}?db=1"
    async with Broadcast(url) as broadcast, broadcast.subscribe("unix") as subscriber:
        await broadcast.publish("unix", "over a socket file")
        with anyio.fail_after(DEADLINE):
            assert (await subscriber.get()).message == "over a socket file"
