"""Recovery as real consumers meet it: they subscribe again at once, publish during the restore,
or never subscribe again; and a supervisor that dies says so."""

import logging
import time
import types
import uuid

import anyio
import pytest

from opal_broadcast import (
    BackboneInfo,
    BackboneUnavailable,
    Broadcast,
    Event,
    Gap,
    InvalidOption,
    SubscriptionGap,
    hookimpl,
)
from opal_broadcast._memory import MemoryConnection
from opal_broadcast._supervisor import Supervisor
from opal_broadcast.plugin import CONTRACT_VERSION
from opal_broadcast.testing import restore_memory, simulate_memory_loss

pytestmark = pytest.mark.anyio

FAST = {"probe_interval": 60, "reconnect_max_delay": 0.05, "publish_timeout": 2}


@pytest.fixture
def url():
    return f"memory://restore-{uuid.uuid4().hex[:8]}"


async def _until(condition, seconds=5.0):
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.005)


async def test_subscribing_again_at_once_is_live_right_after_the_reconnect(url):
    """Consumers that re-enter subscribe() the instant their iteration ends with a gap, while
    the backbone is still down, are live within 0.1 s of the reconnect (they used to deadlock
    with the restore until their connect timeout fired)."""
    async with Broadcast(url, **FAST) as broadcast:
        received: dict[int, list[str]] = {0: [], 1: []}
        resubscribed = [0, 0]

        async def consumer(number):
            while True:
                try:
                    async with broadcast.subscribe("c") as subscriber:
                        resubscribed[number] += 1
                        async for event in subscriber:
                            received[number].append(event.message)
                except (SubscriptionGap, BackboneUnavailable):
                    continue  # no sleep: what a retry loop without backoff does

        async with anyio.create_task_group() as tasks:
            for number in received:
                tasks.start_soon(consumer, number)
            await _until(lambda: broadcast.health().subscribers == 2)
            simulate_memory_loss(url, stay_down=True)
            await anyio.sleep(0.3)
            assert broadcast.health().state == "reconnecting"
            restore_memory(url)
            back = time.monotonic()
            await _until(lambda: broadcast.health().state == "connected")
            await _until(lambda: broadcast.health().subscribers == 2)
            assert time.monotonic() - back < 0.1 + 0.05  # reconnect_max_delay, then at once
            await broadcast.publish("c", "after")
            await _until(lambda: all(messages == ["after"] for messages in received.values()))
            tasks.cancel_scope.cancel()
        assert resubscribed == [2, 2]


async def test_a_subscriber_arriving_while_down_waits_its_timeout_and_fails_typed(url):
    """No hang: BackboneUnavailable after connect_timeout, naming the state."""
    async with Broadcast(url, connect_timeout=0.3, **FAST) as broadcast:
        simulate_memory_loss(url, stay_down=True)
        started = time.monotonic()
        with pytest.raises(BackboneUnavailable, match=r"\(reconnecting\).*timed out after 0\.3"):
            async with broadcast.subscribe("c"):
                pass
        assert time.monotonic() - started < 1.0
        restore_memory(url)


def slow_restore_plugin(scheme, gate: anyio.Event, subscribed: list[str], probes=None):
    """memory:// with a subscribe that waits for ``gate`` once a reconnect has happened
    (``probes``: each probe's count of connections, and whether the gate was still shut)."""
    plugin = types.ModuleType(f"plugin_{scheme}")
    connects = []

    class SlowRestore(MemoryConnection):
        async def probe(self):
            if probes is not None:
                probes.append((len(connects), gate.is_set()))
            await super().probe()

        @classmethod
        async def open(cls, url, options, link):
            connects.append(url)
            return await super().open(url, options, link)

        async def subscribe(self, channels):
            if len(connects) > 1:
                await gate.wait()
            await super().subscribe(channels)
            subscribed.extend(channels)

    @hookimpl
    def opal_broadcast_backbone():
        return BackboneInfo(schemes=(scheme,), contract=CONTRACT_VERSION, connection=SlowRestore)

    plugin.opal_broadcast_backbone = opal_broadcast_backbone
    return plugin


async def test_publishing_does_not_wait_for_the_restore():
    """Once the new connection is up, publish goes through while channels are being restored;
    health() says restoring, and connected once every channel is live again."""
    gate, subscribed = anyio.Event(), []
    plugin = slow_restore_plugin("slowrestore", gate, subscribed)
    url = f"slowrestore://{uuid.uuid4().hex[:8]}"
    async with Broadcast(url, backend=plugin, **FAST) as broadcast:
        async with broadcast.subscribe("c", keep_going=True) as subscriber:
            simulate_memory_loss(url, stay_down=False)
            assert isinstance(await subscriber.get(), Gap)
            await _until(lambda: broadcast.health().state == "restoring")
            with anyio.fail_after(0.5):
                await broadcast.publish("other", "not waiting")
            assert broadcast.health().channels == 0
            gate.set()
            await _until(lambda: broadcast.health().state == "connected")
            assert broadcast.health().channels == 1
            await broadcast.publish("c", "restored")
            assert await subscriber.get() == Event("c", "restored")
    assert subscribed == ["c", "c"]


async def test_no_probe_runs_before_the_restore_is_done():
    """A plugin may count on it (Kafka forgets the positions of channels left during an outage
    at its first probe): probing while the restore waits would lose the others' positions."""
    gate, subscribed, probes = anyio.Event(), [], []
    plugin = slow_restore_plugin("probedrestore", gate, subscribed, probes)
    url = f"probedrestore://{uuid.uuid4().hex[:8]}"
    options = {**FAST, "probe_interval": 0.01}
    async with Broadcast(url, backend=plugin, **options) as broadcast:
        async with broadcast.subscribe("c", keep_going=True) as subscriber:
            await _until(lambda: len(probes) >= 2)  # the first connection is probed
            simulate_memory_loss(url, stay_down=False)
            assert isinstance(await subscriber.get(), Gap)
            await _until(lambda: broadcast.health().state == "restoring")
            await anyio.sleep(0.2)  # twenty probe intervals
            gate.set()
            await _until(lambda: broadcast.health().state == "connected")
            await _until(lambda: probes[-1][0] == 2)  # the new connection is probed, after
    assert (2, False) not in probes, probes


async def test_many_channels_are_restored_concurrently(url):
    """2,000 channels come back with the reconnect; each receives again."""
    async with Broadcast(url, **FAST) as broadcast:
        async with anyio.create_task_group() as tasks:
            subscribers = {}

            async def hold(channel, *, task_status=anyio.TASK_STATUS_IGNORED):
                async with broadcast.subscribe(channel, keep_going=True) as subscriber:
                    subscribers[channel] = subscriber
                    task_status.started()
                    await anyio.sleep_forever()

            for number in range(2000):
                await tasks.start(hold, f"ch{number}")
            simulate_memory_loss(url, stay_down=False)
            await _until(lambda: broadcast.health().state == "connected")
            assert broadcast.health().channels == 2000
            for channel in ("ch0", "ch999", "ch1999"):
                await broadcast.publish(channel, "back")
                assert isinstance(await subscribers[channel].get(), Gap)
                assert await subscribers[channel].get() == Event(channel, "back")
            tasks.cancel_scope.cancel()


async def test_a_dead_supervisor_ends_every_subscription_and_health_says_failed(
    url, monkeypatch, caplog
):
    """If reconnecting itself breaks, subscribers are not left waiting for ever: each gets a gap,
    health() is 'failed', publishing fails typed, and a new Broadcast gets a fresh connection."""

    async def broken(self):
        raise RuntimeError("a bug in the reconnect loop")

    monkeypatch.setattr(Supervisor, "_reconnect", broken)
    async with Broadcast(url, **FAST) as broadcast:
        async with (
            broadcast.subscribe("c") as default,
            broadcast.subscribe("c", keep_going=True) as marked,
        ):
            simulate_memory_loss(url, stay_down=False)
            with pytest.raises(SubscriptionGap), anyio.fail_after(2):
                await default.get()
            with anyio.fail_after(2):
                assert isinstance(await marked.get(), Gap)
                await _until(lambda: broadcast.health().state == "failed")
                gap = await marked.get()  # the supervisor's own gap, then the end
                assert isinstance(gap, Gap) and "supervision" in gap.reason
                async for _ in marked:
                    pytest.fail("a failed hub delivers nothing more")
        health = broadcast.health()
        assert health.state == "failed" and "a bug in the reconnect loop" in health.last_error
        with pytest.raises(BackboneUnavailable, match="failed"):
            await broadcast.publish("c", "x")
        monkeypatch.undo()
        async with Broadcast(url, **FAST) as fresh:
            assert fresh.health().state == "connected"
    assert "supervision of" in caplog.text and "stopped unexpectedly" in caplog.text


@pytest.mark.parametrize("where", ["keyword", "url"])
async def test_gap_policy_continue_keeps_the_iteration_going(url, where, caplog):
    """A consumer that never subscribes again (fastapi_websocket_pubsub's plain EventBroadcaster)
    keeps receiving after a loss: no exception, no marker; the gap is logged, counted, called back."""
    gaps: list[Gap] = []
    kwargs = {"gap_policy": "continue"} if where == "keyword" else {}
    target = url + ("?gap_policy=continue" if where == "url" else "")
    caplog.set_level(logging.WARNING, "opal_broadcast")
    async with Broadcast(target, on_gap=gaps.append, **FAST, **kwargs) as broadcast:
        async with broadcast.subscribe("c") as subscriber:
            await broadcast.publish("c", "before")
            assert await subscriber.get() == Event("c", "before")
            simulate_memory_loss(url, stay_down=True)
            await anyio.sleep(0.1)
            restore_memory(url)
            await _until(lambda: broadcast.health().state == "connected")
            await broadcast.publish("c", "after")
            with anyio.fail_after(2):
                assert await subscriber.get() == Event("c", "after")
        assert broadcast.health().gaps == 1
    assert len(gaps) == 1
    assert "lost the connection" in caplog.text


async def test_gap_policy_continue_also_survives_an_overflow(url, caplog):
    """A full queue drops (and logs one line with the count) but does not end the iteration."""
    received: list[str] = []
    async with Broadcast(url, gap_policy="continue", max_queue=2) as broadcast:
        async with broadcast.subscribe("c") as subscriber, anyio.create_task_group() as tasks:

            async def read():
                async for event in subscriber:
                    received.append(event.message)

            for number in range(5):  # memory:// never yields here: the reader sees none yet
                await broadcast.publish("c", str(number))
            tasks.start_soon(read)
            await _until(lambda: received == ["0", "1"])
            await anyio.sleep(0.05)
            await broadcast.publish("c", "5")
            await _until(lambda: received == ["0", "1", "5"])
            tasks.cancel_scope.cancel()
    assert "3 message(s) dropped" in caplog.text


def test_an_unknown_gap_policy_is_refused():
    """A typo is an InvalidOption naming the choices, whether in the URL or a keyword."""
    with pytest.raises(InvalidOption, match="end, continue"):
        Broadcast("memory://?gap_policy=skip")
    with pytest.raises(InvalidOption, match="end, continue"):
        Broadcast("memory://", gap_policy="resume")  # type: ignore[arg-type]


async def test_a_disconnect_during_the_restore_closes_quietly(caplog):
    """Closing while the supervisor restores channels: closed stays closed, nothing is logged as
    a failure (the finishing restore used to bring the state back and then report a dead
    supervisor)."""
    gate, subscribed = anyio.Event(), []
    plugin = slow_restore_plugin("closerestore", gate, subscribed)
    url = f"closerestore://{uuid.uuid4().hex[:8]}"
    broadcast = Broadcast(url, backend=plugin, **FAST)
    await broadcast.connect()
    hub = broadcast._hub
    async with broadcast.subscribe("c", keep_going=True) as subscriber:
        simulate_memory_loss(url, stay_down=False)
        assert isinstance(await subscriber.get(), Gap)
        await _until(lambda: broadcast.health().state == "restoring")
        gate.set()  # the restore finishes while the hub is closing
        await broadcast.disconnect()
    assert hub.state == "closed"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
