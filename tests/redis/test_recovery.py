"""Every way Redis loses messages becomes a reported gap: restart, CLIENT KILL, eviction, a frozen link.

redis-py alone reconnects and resubscribes on its own after each of these and says nothing about
the messages lost meanwhile. Each test checks both subscriber modes: a default subscriber's
iteration ends with SubscriptionGap and subscribing again receives; a keep_going subscriber sees a
Gap marker and keeps receiving on the restored subscription.
"""

import time
import uuid
from collections.abc import Awaitable, Callable

import anyio
import pytest
import redis

from opal_broadcast import (
    BackboneUnavailable,
    Broadcast,
    Event,
    Gap,
    Subscriber,
    SubscriptionGap,
)
from tests.redis.conftest import DEADLINE, FAST, ServerRestart
from tests.services import TcpProxy, kill_redis_clients

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

Fault = Callable[[Broadcast, str], Awaitable[None]]


@pytest.fixture
def channel() -> str:
    return f"recovery-{uuid.uuid4().hex[:10]}"


async def until_healthy(broadcast: Broadcast) -> None:
    with anyio.fail_after(DEADLINE):
        while not broadcast.health().ok:
            await anyio.sleep(0.02)


async def drain_until_gap(subscriber: Subscriber[Event | Gap]) -> tuple[int, Gap]:
    """Read a keep_going subscriber up to its gap marker: (events before it, the marker)."""
    events = 0
    with anyio.fail_after(DEADLINE):
        while True:
            item = await subscriber.get()
            if isinstance(item, Gap):
                return events, item
            events += 1


async def end_of(subscriber: Subscriber[Event]) -> tuple[int, SubscriptionGap]:
    """Iterate a default subscriber to its end: (events read, the SubscriptionGap that ended it)."""
    events = 0
    with anyio.fail_after(DEADLINE):
        try:
            async for _ in subscriber:
                events += 1
        except SubscriptionGap as gap:
            return events, gap
    pytest.fail("the iteration ended without a SubscriptionGap")


async def assert_fault_is_a_gap(url: str, channel: str, fault: Fault, **options: object) -> int:
    """Run ``fault`` under both kinds of subscriber; return how many events arrived before the gap."""
    gaps: list[Gap] = []
    async with Broadcast(url, on_gap=gaps.append, **{**FAST, **options}) as broadcast:
        async with (
            broadcast.subscribe(channel) as default,
            broadcast.subscribe(channel, keep_going=True) as keeper,
        ):
            await broadcast.publish(channel, "before")
            with anyio.fail_after(DEADLINE):
                assert (await default.get()).message == "before"
                assert (await keeper.get()) == Event(channel, "before")
            await fault(broadcast, channel)

            delivered, ended = await end_of(default)
            assert ended.gap is default.gap
            assert ended.gap.channel == channel
            assert "lost" in ended.gap.reason

            before_marker, marker = await drain_until_gap(keeper)
            assert marker.channel == channel
            assert before_marker == delivered

            await until_healthy(broadcast)
            async with Broadcast(url, share_connection=False, **FAST) as other:
                await other.publish(channel, "after")
            with anyio.fail_after(DEADLINE):
                assert await keeper.get() == Event(channel, "after")
            async with broadcast.subscribe(channel) as again:
                await broadcast.publish(channel, "again")
                with anyio.fail_after(DEADLINE):
                    assert (await again.get()).message == "again"
        health = broadcast.health()
    assert gaps, "the on_gap callback was not called"
    assert health.gaps >= 1
    assert health.reconnects >= 1
    return delivered


async def test_server_restart_is_a_gap(redis_url, channel, server_restart: ServerRestart):
    """Stop and start Redis: the subscription is restored and the loss is reported."""

    async def restart(*_: object) -> None:
        await server_restart.interrupt()
        await anyio.sleep(0.3)  # reconnect attempts are refused meanwhile
        await server_restart.restore()

    await assert_fault_is_a_gap(redis_url, channel, restart)


async def test_client_kill_pubsub_is_a_gap(redis_url, channel):
    """CLIENT KILL TYPE pubsub: redis-py would resubscribe silently; here it is a gap."""

    async def kill(*_: object) -> None:
        assert await kill_redis_clients(redis_url, client_type="pubsub") >= 1

    await assert_fault_is_a_gap(redis_url, channel, kill)


async def test_eviction_of_a_slow_subscriber_is_a_gap(redis_url, channel):
    """Over client-output-buffer-limit, Redis drops the subscriber: a gap after what was read."""
    admin = redis.Redis.from_url(redis_url)
    limit = admin.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
    burst = 300

    async def flood(_: Broadcast, name: str) -> None:
        # Synchronous on purpose: the event loop is blocked, as in a busy process, so nothing
        # reads the pub/sub connection while 30 MB are published to it.
        admin.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 1")
        with admin.pipeline(transaction=False) as pipe:
            for _ in range(burst):
                pipe.publish(name, b"x" * 100_000)
            pipe.execute()

    try:
        delivered = await assert_fault_is_a_gap(redis_url, channel, flood, max_queue=burst + 10)
    finally:
        admin.config_set("client-output-buffer-limit", limit)
        admin.close()
    assert delivered < burst, "nothing was evicted: the test did not exercise the limit"


async def test_frozen_connection_is_found_by_the_probe(redis_url, channel, proxy_to):
    """A proxy that stops forwarding (TCP open, nothing moves): the probe's deadline finds it."""
    proxy: TcpProxy = proxy_to(redis_url)
    await proxy.start()

    async def freeze(broadcast: Broadcast, name: str) -> None:
        proxy.stall()
        frozen_at = time.monotonic()
        with anyio.fail_after(DEADLINE):
            while broadcast.health().gaps == 0:
                await anyio.sleep(0.02)
        assert time.monotonic() - frozen_at < 3.0  # probe_interval 0.2 s + probe_timeout 0.5 s
        last_gap = broadcast.health().last_gap
        assert last_gap is not None
        assert "liveness probe failed" in last_gap.reason
        started = time.monotonic()
        with pytest.raises(BackboneUnavailable):
            await broadcast.publish(name, "into the void")
        assert time.monotonic() - started < FAST["publish_timeout"] + 1
        proxy.resume()

    await assert_fault_is_a_gap(proxy.url(), channel, freeze)


async def test_publish_during_an_outage_fails_typed_and_bounded(redis_url, channel, server_restart):
    """With Redis down, publish raises BackboneUnavailable within publish_timeout, then recovers."""
    async with Broadcast(redis_url, **FAST) as broadcast:
        await server_restart.interrupt()
        started = time.monotonic()
        with pytest.raises(BackboneUnavailable) as caught:
            await broadcast.publish(channel, "lost")
        assert time.monotonic() - started < FAST["publish_timeout"] + 1
        assert "redis://" in str(caught.value)
        await server_restart.restore()
        await until_healthy(broadcast)
        await broadcast.publish(channel, "back")
