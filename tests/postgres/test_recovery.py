"""Loss of the listening session (killed, server restarted, frozen): a gap, then delivery resumes."""

from __future__ import annotations

import time
import uuid
from contextlib import AsyncExitStack

import anyio
import pytest

from opal_broadcast import BackboneUnavailable, Broadcast, Event, Gap, SubscriptionGap
from tests.services import TcpProxy, terminate_pg_backends

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

FAST = {
    "probe_interval": 0.3,
    "probe_timeout": 0.7,
    "publish_timeout": 2.0,
    "connect_timeout": 2.0,
    "reconnect_max_delay": 0.3,
}


async def _until_healthy(broadcast: Broadcast, timeout: float = 20) -> None:
    with anyio.fail_after(timeout):
        while not broadcast.health().ok:
            await anyio.sleep(0.02)


async def _delivered_after_recovery(
    broadcast: Broadcast, pg_url: str, channel: str, subscriber
) -> Event:
    """Publish from a separate connection until the (restored) subscription receives it."""
    async with Broadcast(pg_url, share_connection=False, **FAST) as other:
        await other.publish(channel, "resumed")
    with anyio.fail_after(10):
        return await subscriber.get()


async def test_terminated_listener_is_a_gap_then_delivery_resumes(pg_url, app_name, channel):
    """pg_terminate_backend on the listening session: gap on every subscriber, LISTEN restored."""
    gaps: list[Gap] = []
    async with Broadcast(pg_url, on_gap=gaps.append, **FAST) as broadcast:
        async with broadcast.subscribe(channel, keep_going=True) as keeper:
            async with broadcast.subscribe(channel) as default:
                await broadcast.publish(channel, "before")
                with anyio.fail_after(10):
                    assert (await keeper.get()).message == "before"
                    assert (await default.get()).message == "before"
                assert await terminate_pg_backends(application_name=f"{app_name}/listen") == 1
                with anyio.fail_after(10):
                    marker = await keeper.get()
                    with pytest.raises(SubscriptionGap, match="listening session"):
                        await default.get()
                assert isinstance(marker, Gap)
                assert marker.channel == channel
            await _until_healthy(broadcast)
            assert await _delivered_after_recovery(broadcast, pg_url, channel, keeper) == Event(
                channel, "resumed"
            )
            health = broadcast.health()
    assert len(gaps) == 1
    assert health.reconnects == 1
    assert health.channels == 1


async def test_terminated_publishing_sessions_need_no_gap(pg_url, app_name, channel):
    """Killing the publishing sessions loses nothing already sent: publishing goes on, no gap."""
    async with Broadcast(pg_url, **FAST) as broadcast, broadcast.subscribe(channel) as subscriber:
        await broadcast.publish(channel, "one")
        assert await terminate_pg_backends(application_name=f"{app_name}/publish") == 1
        received = ["one"]
        with anyio.fail_after(10):
            assert (await subscriber.get()).message == "one"
            sent = 0
            while received[-1] != "two":
                try:
                    await broadcast.publish(channel, "two")
                    sent += 1
                except BackboneUnavailable:  # the dead session, if asyncpg had not noticed yet
                    await anyio.sleep(0.05)
                    continue
                received.append(str((await subscriber.get()).message))
        assert sent == 1
        assert broadcast.health().gaps == 0


async def test_server_restart_is_a_gap_then_delivery_resumes(services, pg_url, channel):
    """A full server restart: gap, reconnect with backoff while it is down, LISTEN restored."""
    gaps: list[Gap] = []
    async with Broadcast(pg_url, on_gap=gaps.append, **FAST) as broadcast:
        async with broadcast.subscribe(channel, keep_going=True) as subscriber:
            await broadcast.publish(channel, "before")
            with anyio.fail_after(10):
                assert (await subscriber.get()).message == "before"
            try:
                await services.astop("postgres")
                with anyio.fail_after(10):
                    assert isinstance(await subscriber.get(), Gap)
                with pytest.raises(BackboneUnavailable), anyio.fail_after(10):
                    await broadcast.publish(channel, "while down")
                assert broadcast.health().state == "reconnecting"
            finally:
                with anyio.CancelScope(shield=True):
                    await services.astart("postgres")
            await _until_healthy(broadcast, timeout=30)
            await broadcast.publish(channel, "after")  # fresh publishing sessions too
            with anyio.fail_after(10):
                assert await subscriber.get() == Event(channel, "after")
    assert gaps


async def test_frozen_connection_is_found_by_the_probe_within_seconds(
    proxy: TcpProxy, pg_url, channel
):
    """TCP open, nothing forwarded (a half-open link after a failover): a gap in about a second."""
    gaps: list[Gap] = []
    async with Broadcast(proxy.url(), on_gap=gaps.append, **FAST) as broadcast:
        async with broadcast.subscribe(channel, keep_going=True) as subscriber:
            await broadcast.publish(channel, "before")
            with anyio.fail_after(10):
                assert (await subscriber.get()).message == "before"
            proxy.stall()
            started = time.monotonic()
            try:
                with anyio.fail_after(10):
                    marker = await subscriber.get()
                detected = time.monotonic() - started
                assert isinstance(marker, Gap)
                assert "liveness probe failed" in marker.reason
                assert detected < FAST["probe_interval"] + FAST["probe_timeout"] + 1.0
                with pytest.raises(BackboneUnavailable), anyio.fail_after(10):
                    await broadcast.publish(channel, "while frozen")
            finally:
                proxy.resume()
            await _until_healthy(broadcast)
            await broadcast.publish(channel, "after")
            with anyio.fail_after(10):
                assert await subscriber.get() == Event(channel, "after")
    assert len(gaps) >= 1


async def test_publish_on_a_frozen_link_times_out_and_the_next_link_works(proxy: TcpProxy, channel):
    """A publish stuck on a frozen link fails within publish_timeout; after resume, all flows."""
    options = {**FAST, "probe_interval": 30.0}  # only the publish deadline can notice here
    async with Broadcast(proxy.url(), **options) as broadcast:
        async with broadcast.subscribe(channel) as subscriber:
            await broadcast.publish(channel, "before")
            with anyio.fail_after(10):
                assert (await subscriber.get()).message == "before"
            proxy.stall()
            started = time.monotonic()
            try:
                with pytest.raises(BackboneUnavailable, match="timed out"):
                    await broadcast.publish(channel, "stuck")
                assert time.monotonic() - started < FAST["publish_timeout"] + 1.0
            finally:
                proxy.resume()
            # The stuck lane was dropped (its state unknown); a new one carries on.
            await broadcast.publish(channel, "after")
            with anyio.fail_after(10):
                got = [(await subscriber.get()).message]
                while got[-1] != "after":
                    got.append((await subscriber.get()).message)
            assert got[-1] == "after"
            assert set(got) <= {"stuck", "after"}


async def test_many_concurrent_subscribes_and_a_busy_probe_never_collide(pg_url):
    """LISTENs from many tasks while the probe runs constantly: no spurious loss, all live."""
    channels = [f"pg-many-{i}-{uuid.uuid4().hex[:6]}" for i in range(100)]
    options = {**FAST, "probe_interval": 0.001, "probe_timeout": 5.0}
    async with Broadcast(pg_url, **options) as broadcast, AsyncExitStack() as stack:

        async def enter(channel: str) -> None:
            await stack.enter_async_context(broadcast.subscribe(channel))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tasks:
                for channel in channels:
                    tasks.start_soon(enter, channel)
        health = broadcast.health()
        assert health.channels == len(channels)
        assert health.gaps == 0
        assert health.reconnects == 0


async def test_bad_names_and_oversized_messages_are_refused_at_once_during_an_outage(
    proxy: TcpProxy, channel
):
    """While reconnecting, a 64-byte name is InvalidChannel and 2 MiB is MessageTooLarge, now."""
    from opal_broadcast import InvalidChannel, MessageTooLarge

    async with Broadcast(proxy.url(), **{**FAST, "publish_timeout": 30}) as broadcast:
        proxy.cut(refuse_new=True)
        try:
            with anyio.fail_after(5):
                while broadcast.health().ok:
                    await anyio.sleep(0.02)
            with anyio.fail_after(1):
                with pytest.raises(InvalidChannel):
                    await broadcast.publish("x" * 64, "m")
                with pytest.raises(MessageTooLarge):
                    await broadcast.publish(channel, "y" * (2 * 1024 * 1024))
        finally:
            proxy.resume()


async def test_the_probe_reports_the_servers_notification_queue_usage(pg_url):
    """health().measurements has pg_notification_queue_usage() once a probe has run: a fraction
    (0 on an idle test server), refreshed by every probe."""
    async with Broadcast(pg_url, **FAST) as broadcast:
        with anyio.fail_after(10):
            while "postgresql.notification_queue.usage" not in broadcast.health().measurements:
                await anyio.sleep(0.05)
        usage = broadcast.health().measurements["postgresql.notification_queue.usage"]
    assert 0.0 <= usage < 1.0
