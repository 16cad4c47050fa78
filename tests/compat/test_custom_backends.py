"""Backends written the way encode/broadcaster 0.3.1 writes its own (redis-py PubSub with a
listener task, asyncpg ``add_listener``), run through ``Broadcast(backend=...)`` on the real
servers: delivery, and what happens when the server drops the backend's connection.

broadcaster's own backends never raise from ``next_published()`` when their connection breaks: they
go deaf. The core's probe sends a token through the backend and waits for it to come back, so a
deaf backend is found within the probe deadline, subscribers hear of the gap, and the backend is
connected again.
"""

from __future__ import annotations

import asyncio
import typing
import uuid

import asyncpg
import pytest
import redis.asyncio as aioredis

from opal_broadcast import Broadcast, BroadcastBackend, Event, Gap

pytestmark = pytest.mark.anyio

FAST = {"probe_interval": 0.2, "probe_timeout": 1.0, "reconnect_max_delay": 0.2}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RedisPubSubBackend(BroadcastBackend):
    """redis-py's PubSub, a listener task feeding a queue: broadcaster 0.3.1's design."""

    def __init__(self, url: str):
        self.client_name = f"compat-{uuid.uuid4().hex[:8]}"
        self._conn = aioredis.Redis.from_url(url, client_name=self.client_name)
        self._pubsub = self._conn.pubsub()
        self._ready = asyncio.Event()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._listener: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self._listener = asyncio.create_task(self._pubsub_listener())
        await self._pubsub.connect()

    async def disconnect(self) -> None:
        await self._pubsub.aclose()
        await self._conn.aclose()
        if self._listener is not None:
            self._listener.cancel()

    async def subscribe(self, channel: str) -> None:
        self._ready.set()
        await self._pubsub.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self._pubsub.unsubscribe(channel)

    async def publish(self, channel: str, message: typing.Any) -> None:
        await self._conn.publish(channel, message)

    async def next_published(self) -> Event:
        return await self._queue.get()

    async def _pubsub_listener(self) -> None:
        while True:
            await self._ready.wait()
            async for message in self._pubsub.listen():
                if message["type"] == "message":
                    channel, data = message["channel"].decode(), message["data"].decode()
                    await self._queue.put(Event(channel=channel, message=data))
            self._ready.clear()


class PostgresListenBackend(BroadcastBackend):
    """asyncpg's add_listener on one connection: broadcaster 0.3.1's design."""

    def __init__(self, url: str):
        self._url = url

    async def connect(self) -> None:
        self._conn = await asyncpg.connect(self._url)
        self._listen_queue: asyncio.Queue[Event] = asyncio.Queue()

    async def disconnect(self) -> None:
        await self._conn.close(timeout=1)

    async def subscribe(self, channel: str) -> None:
        await self._conn.add_listener(channel, self._listener)

    async def unsubscribe(self, channel: str) -> None:
        await self._conn.remove_listener(channel, self._listener)

    async def publish(self, channel: str, message: str) -> None:
        await self._conn.execute("SELECT pg_notify($1, $2);", channel, message)

    def _listener(self, *args: typing.Any) -> None:
        _connection, _pid, channel, payload = args
        self._listen_queue.put_nowait(Event(channel=channel, message=payload))

    async def next_published(self) -> Event:
        return await self._listen_queue.get()


async def deliver_until_received(broadcast: Broadcast, subscriber, channel: str, text: str) -> None:
    """Publish ``text`` until it arrives (the backend may still be reconnecting)."""
    for _ in range(100):
        try:
            await broadcast.publish(channel, text)
            event = await asyncio.wait_for(subscriber.get(), 0.5)
        except (TimeoutError, asyncio.TimeoutError, Exception):
            continue
        if isinstance(event, Event) and event.message == text:
            return
    raise AssertionError(f"{text!r} never arrived")


async def test_a_redis_backend_in_broadcasters_style_delivers(redis_url):
    """Round trip, two channels, through the core's fan-out."""
    backend = RedisPubSubBackend(redis_url)
    async with Broadcast(backend=backend) as broadcast:
        async with broadcast.subscribe("a") as a, broadcast.subscribe("b") as b:
            await broadcast.publish("a", "to a")
            await broadcast.publish("b", "to b")
            assert await asyncio.wait_for(a.get(), 5) == Event("a", "to a")
            assert await asyncio.wait_for(b.get(), 5) == Event("b", "to b")


async def test_a_postgres_backend_in_broadcasters_style_delivers(postgres_url):
    """Round trip through asyncpg's add_listener, run by the core."""
    async with Broadcast(backend=PostgresListenBackend(postgres_url)) as broadcast:
        async with broadcast.subscribe("chatroom") as subscriber:
            await broadcast.publish("chatroom", "hello")
            assert await asyncio.wait_for(subscriber.get(), 5) == Event("chatroom", "hello")


async def test_a_redis_backend_that_goes_deaf_is_found_by_the_probe_and_reconnected(redis_url):
    """CLIENT KILL of the backend's connections: its listener task dies and next_published()
    never returns, as in broadcaster. The probe's token does not come back, so the subscriber
    hears of a gap within the probe deadline, and delivery resumes on a new backend object."""
    channel = f"deaf-{uuid.uuid4().hex[:8]}"
    made: list[RedisPubSubBackend] = []

    def make(url: str) -> RedisPubSubBackend:
        made.append(RedisPubSubBackend(redis_url))
        return made[-1]

    import types

    from opal_broadcast._registry import default_registry
    from opal_broadcast.plugin import broadcaster_backend_info, hookimpl

    scheme = f"deaf{uuid.uuid4().hex[:6]}"
    plugin = types.SimpleNamespace(
        opal_broadcast_backbone=hookimpl(lambda: broadcaster_backend_info(make, scheme))
    )
    registered = default_registry().register(plugin, name=scheme)
    admin = aioredis.Redis.from_url(redis_url)
    try:
        async with Broadcast(f"{scheme}://redis", **FAST) as broadcast:
            async with broadcast.subscribe(channel, keep_going=True) as subscriber:
                await broadcast.publish(channel, "before")
                assert await asyncio.wait_for(subscriber.get(), 5) == Event(channel, "before")
                killed = await admin.client_kill_filter(
                    _type="pubsub", skipme=True, laddr=None, user=None
                )
                assert killed >= 1
                gap = await asyncio.wait_for(subscriber.get(), 10)
                assert isinstance(gap, Gap)
                await deliver_until_received(broadcast, subscriber, channel, "after")
            assert broadcast.health().reconnects >= 1
    finally:
        await admin.aclose()
        default_registry().unregister(registered)
    assert len(made) >= 2  # a new backend object per connection


async def test_a_postgres_backend_whose_session_is_terminated_reconnects(
    postgres_url, postgres_admin_url
):
    """pg_terminate_backend of the backend's session: the probe's publish fails or its token
    never comes back, the subscriber hears of a gap, and the same backend object is connected
    again (Broadcast(backend=obj) reuses it) with the channel subscribed again."""
    app = f"compat-{uuid.uuid4().hex[:8]}"
    backend = PostgresListenBackend(f"{postgres_url}?application_name={app}")
    async with Broadcast(backend=backend, **FAST) as broadcast:
        async with broadcast.subscribe("chatroom", keep_going=True) as subscriber:
            await broadcast.publish("chatroom", "before")
            assert await asyncio.wait_for(subscriber.get(), 5) == Event("chatroom", "before")
            admin = await asyncpg.connect(postgres_admin_url)
            try:
                terminated = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = $1",
                    app,
                )
            finally:
                await admin.close()
            assert terminated == 1
            gap = await asyncio.wait_for(subscriber.get(), 10)
            assert isinstance(gap, Gap)
            await deliver_until_received(broadcast, subscriber, "chatroom", "after")
        assert broadcast.health().reconnects >= 1
