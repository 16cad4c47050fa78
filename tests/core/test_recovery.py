"""Loss and recovery in the core, on the memory backbone's simulated faults."""

import asyncio
import sys
import time
import uuid

import anyio
import pytest

from opal_broadcast import BackboneUnavailable, Broadcast, Gap, SubscriptionGap
from opal_broadcast._deadlines import Deadlines
from opal_broadcast.testing import freeze_memory, restore_memory, simulate_memory_loss

pytestmark = pytest.mark.anyio

FAST = {
    "probe_interval": 0.1,
    "probe_timeout": 0.2,
    "reconnect_max_delay": 0.1,
    "publish_timeout": 0.5,
}


@pytest.fixture
def url():
    return f"memory://recovery-{uuid.uuid4().hex[:8]}"


async def test_frozen_connection_is_found_by_the_probe(url):
    """TCP-open-but-silent: the probe's deadline turns it into a gap within interval+timeout."""
    gaps: list[Gap] = []
    async with Broadcast(url, on_gap=gaps.append, **FAST) as broadcast:
        async with broadcast.subscribe("c") as subscriber:
            freeze_memory(url)
            started = time.monotonic()
            with pytest.raises(SubscriptionGap, match="liveness probe failed"), anyio.fail_after(5):
                await subscriber.get()
            assert time.monotonic() - started < 2.0
        last_gap = broadcast.health().last_gap
        assert last_gap is not None and "no answer within 0.2 s" in last_gap.reason
        restore_memory(url)
        with anyio.fail_after(5):
            while not broadcast.health().ok:
                await anyio.sleep(0.02)
    assert len(gaps) >= 1


async def test_publish_during_an_outage_fails_within_the_timeout(url):
    """No hang: BackboneUnavailable after publish_timeout, naming the last error."""
    async with Broadcast(url, **FAST) as broadcast:
        simulate_memory_loss(url, stay_down=True)
        started = time.monotonic()
        with pytest.raises(BackboneUnavailable, match=r"timed out after 0\.5 s") as caught:
            await broadcast.publish("c", "lost")
        assert time.monotonic() - started < 2.0
        assert "simulated" in str(caught.value)
        restore_memory(url)


async def test_reconnect_backs_off_and_restores_keep_going_subscriptions(url):
    """While down, attempts repeat with backoff; once back, the channel is subscribed again."""
    async with Broadcast(url, **FAST) as broadcast:
        async with broadcast.subscribe("c", keep_going=True) as subscriber:
            simulate_memory_loss(url, stay_down=True)
            assert isinstance(await subscriber.get(), Gap)
            await anyio.sleep(0.5)
            health = broadcast.health()
            assert health.state == "reconnecting"
            assert health.last_error is not None and "down" in health.last_error
            restore_memory(url)
            with anyio.fail_after(5):
                while not broadcast.health().ok:
                    await anyio.sleep(0.02)
            assert broadcast.health().channels == 1
            async with Broadcast(url, share_connection=False) as other:
                await other.publish("c", "from another connection")
            assert (await subscriber.get()).message == "from another connection"


async def test_subscribe_during_an_outage_waits_then_fails_typed(url):
    """Subscribing while the backbone is down is bounded by connect_timeout."""
    async with Broadcast(url, connect_timeout=0.3, **FAST) as broadcast:
        simulate_memory_loss(url, stay_down=True)
        with pytest.raises(BackboneUnavailable, match="subscribing to 'c' timed out"):
            async with broadcast.subscribe("c"):
                pass
        restore_memory(url)


async def test_connect_to_a_down_backbone_is_a_typed_error(url):
    """The first connect fails promptly with BackboneUnavailable; nothing is left open."""
    simulate_memory_loss(url, stay_down=True)
    try:
        with pytest.raises(BackboneUnavailable, match="down"):
            async with Broadcast(url):
                pass
    finally:
        restore_memory(url)
    async with Broadcast(url) as broadcast:
        assert broadcast.health().ok


async def _publish_while_frozen(broadcast: Broadcast, url: str) -> float:
    """Publish on the frozen memory backbone: it must time out after 0.3 s. Seconds it took."""
    freeze_memory(url)
    try:
        started = time.monotonic()
        with pytest.raises(BackboneUnavailable, match=r"timed out after 0\.3 s"):
            await broadcast.publish("c", "never answered")
        return time.monotonic() - started
    finally:
        restore_memory(url)


async def test_publish_on_a_frozen_connection_times_out(url):
    """A publish the backbone never answers ends with BackboneUnavailable after publish_timeout."""
    async with Broadcast(url, publish_timeout=0.3, probe_interval=60) as broadcast:
        assert 0.25 < await _publish_while_frozen(broadcast, url) < 2.0
        await broadcast.publish("c", "answered")


async def test_cancelling_a_bounded_publish_is_a_cancellation_not_a_timeout(url):
    """An outer cancel of a hanging publish propagates as cancellation; the deadline stays quiet."""
    async with Broadcast(url, publish_timeout=0.3, probe_interval=60) as broadcast:
        freeze_memory(url)
        try:
            with anyio.move_on_after(0.1) as scope:
                await broadcast.publish("c", "x")
            assert scope.cancelled_caught
            await anyio.sleep(0.4)  # past the publish deadline: nothing fires into this task
        finally:
            restore_memory(url)
        await broadcast.publish("c", "fine")


async def test_a_shorter_publish_timeout_is_kept_while_a_longer_publish_waits(url):
    """Two instances share a connection but not their publish_timeout: the short one still
    fires on time while a publish with a long one is in flight (one timer serves both)."""
    async with (
        Broadcast(url, publish_timeout=30, probe_interval=60) as patient,
        Broadcast(url, publish_timeout=0.3, probe_interval=60) as hasty,
    ):
        assert patient._hub is hasty._hub
        freeze_memory(url)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(patient.publish, "c", "waits")
                await anyio.sleep(0.05)
                started = time.monotonic()
                with pytest.raises(BackboneUnavailable, match=r"timed out after 0\.3 s"):
                    await hasty.publish("c", "gives up")
                assert time.monotonic() - started < 2.0
                tasks.cancel_scope.cancel()
        finally:
            restore_memory(url)
        await patient.publish("c", "answered")


@pytest.mark.parametrize(
    "anyio_backend",
    ["asyncio", ("asyncio", {"use_uvloop": True})],
    ids=["asyncio", "uvloop"],
)
async def test_publish_deadlines_run_on_the_event_loops_clock(url, anyio_backend, monkeypatch):
    """The deadline timer and the expiries it checks read one clock, the loop's (uvloop's is
    cached to the millisecond: mixed with time.monotonic() the timer fired early and spun)."""
    async with Broadcast(url, publish_timeout=0.3, probe_interval=60) as broadcast:
        deadlines = broadcast._hub.publisher.deadlines
        loop = asyncio.get_running_loop()
        assert deadlines.clock() == pytest.approx(loop.time(), abs=0.002)
        fired = 0
        expire = Deadlines._expire

        def counted(self: Deadlines) -> None:
            nonlocal fired
            fired += 1
            expire(self)

        monkeypatch.setattr(Deadlines, "_expire", counted)
        await _publish_while_frozen(broadcast, url)
        if deadlines.native:
            assert 1 <= fired <= 2
        else:  # Python 3.10 (no Task.uncancel) or trio: anyio's fail_after bounds it instead
            assert fired == 0
            assert sys.version_info < (3, 11) or anyio_backend == "trio"


@pytest.mark.parametrize(
    ("query", "keywords"),
    [
        ("?publish_timeout=0.3&probe_interval=60", {}),
        ("?publish_timeout=30", {"publish_timeout": 0.3}),
    ],
    ids=["from-the-url", "keyword-wins"],
)
async def test_timings_can_be_given_in_the_url(url, query, keywords):
    """?publish_timeout= in the URL (all OPAL_BROADCAST_URI can carry) sets the deadline; a
    keyword argument wins over it."""
    async with Broadcast(url + query, **keywords) as broadcast:
        await _publish_while_frozen(broadcast, url)


def test_backoff_stays_capped_however_long_the_outage_lasts():
    """Attempt 10,000 (hours of refused reconnects) waits at most reconnect_max_delay.

    2.0 ** 1024 overflows a float: uncapped, the supervisor would die there and leave the
    subscribers deaf for good.
    """
    from opal_broadcast._tuning import Timings

    settings = Timings(connect_timeout=1, probe_interval=1, probe_timeout=1, reconnect_max_delay=5)
    assert all(2.5 <= settings.backoff(attempt) <= 5 for attempt in (1023, 1024, 10_000))
