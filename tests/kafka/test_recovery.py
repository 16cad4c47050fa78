"""Broker restarts and a frozen broker: the gap is reported, and nothing published after the
broker is back is lost, even what was published before this process had reconnected."""

from __future__ import annotations

import asyncio
import gc
import glob
import os
import signal
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import anyio
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from opal_broadcast import (
    BackboneUnavailable,
    BackboneURL,
    Broadcast,
    Event,
    Gap,
    InvalidChannel,
    MessageTooLarge,
)
from tests.services import TcpProxy

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]

#: Short probe and publish timeouts: a fault must show within a second or two.
FAULTY: dict[str, Any] = {
    "connect_timeout": 5.0,
    "publish_timeout": 1.0,
    "probe_interval": 0.3,
    "probe_timeout": 1.0,
    "reconnect_max_delay": 2.0,
}


async def wait_healthy(broadcast: Broadcast, timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        while not broadcast.health().ok:
            await anyio.sleep(0.05)


def broker_pid(services: ModuleType) -> int:
    [kafka] = [status for status in services.status() if status.name == "kafka"]
    return int(kafka.pids[0])


def freeze(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until every thread of it has stopped: ``kill()`` returns first,
    and a broker thread still running for a moment could answer one more request."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5.0
    while not all(_stopped(stat) for stat in glob.glob(f"/proc/{pid}/task/*/stat")):
        assert time.monotonic() < deadline, f"process {pid} did not stop"
        time.sleep(0.001)


def _stopped(stat_file: str) -> bool:
    try:
        with open(stat_file) as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True  # the thread is gone
    return state in ("T", "t")


@pytest.mark.parametrize("kill", [False, True], ids=["SIGTERM", "SIGKILL"])
async def test_a_broker_restart_loses_nothing_published_once_it_is_back(
    kafka_url: str,
    channel: str,
    services: ModuleType,
    tcp_proxy: Callable[[str], TcpProxy],
    kill: bool,
):
    """Another application publishes a numbered stream across the restart. This process
    bootstraps through a proxy that refuses it until the stream has resumed, so some messages are
    acknowledged while it is still reconnecting. The subscriber sees a gap, then every
    acknowledged message, once and in order: the consumer position was kept."""
    host = BackboneURL.parse(kafka_url).hosts[0]
    acked: list[int] = []
    acked_while_reconnecting: list[int] = []
    producing = True
    producer = AIOKafkaProducer(
        bootstrap_servers=f"{host.host}:{host.port}", request_timeout_ms=1500, linger_ms=0
    )
    await producer.start()
    async with tcp_proxy(kafka_url) as proxy, Broadcast(proxy.url(), **FAULTY) as broadcast:
        async with broadcast.subscribe(channel, keep_going=True) as subscriber:

            async def produce() -> None:
                number = 0
                while producing:
                    try:
                        await producer.send_and_wait(channel, str(number).encode())
                    except KafkaError:
                        await anyio.sleep(0.05)
                    else:
                        acked.append(number)
                        if broadcast.health().state != "connected":
                            acked_while_reconnecting.append(number)
                        await anyio.sleep(0.01)
                    number += 1

            try:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(produce)
                    await anyio.sleep(0.3)
                    await services.astop("kafka", kill=kill)
                    proxy.cut(refuse_new=True)  # hold this process's reconnection off
                    started = time.monotonic()
                    with pytest.raises(BackboneUnavailable):
                        await broadcast.publish(channel, "during the outage")
                    assert time.monotonic() - started < 3.0
                    started = time.monotonic()
                    with pytest.raises(MessageTooLarge):
                        await broadcast.publish(channel, b"x" * (2 << 20))
                    with pytest.raises(InvalidChannel):
                        await broadcast.publish("not a topic name", "x")
                    assert time.monotonic() - started < 0.5, "refused at once, not after a wait"
                    await services.astart("kafka")
                    with anyio.fail_after(20):
                        while len(acked_while_reconnecting) < 20:
                            await anyio.sleep(0.05)
                    assert broadcast.health().state == "reconnecting"
                    proxy.resume()
                    await wait_healthy(broadcast)
                    await anyio.sleep(0.5)
                    producing = False
            finally:
                producing = False
                proxy.resume()
                await services.astart("kafka")  # no-op when running: never leave it down
                await producer.stop()
            received: list[int] = []
            gaps = 0
            with anyio.move_on_after(20):
                while not set(acked) <= set(received):
                    item = await subscriber.get()
                    if isinstance(item, Gap):
                        gaps += 1
                    else:
                        assert isinstance(item, Event)
                        received.append(int(item.message))
            reconnects = broadcast.health().reconnects
    missing = sorted(set(acked) - set(received))
    assert not missing, (
        f"{len(missing)} acknowledged message(s) never arrived: {missing[:10]}; "
        f"received {len(received)}, the last {received[-5:]}; {gaps} gap(s); "
        f"{len(acked_while_reconnecting)} acknowledged while reconnecting"
    )
    assert received == sorted(received), "out of order"
    assert len(received) == len(set(received)), "duplicates"
    assert gaps >= 1
    assert reconnects >= 1


async def test_a_frozen_broker_is_found_by_the_probe(
    kafka_url: str, channel: str, services: ModuleType
):
    """SIGSTOP: sockets stay open and nothing is answered, which aiokafka never notices. The
    metadata probe's deadline reports the gap; after SIGCONT delivery resumes."""
    pid = broker_pid(services)
    async with Broadcast(kafka_url, **FAULTY) as broadcast:
        async with broadcast.subscribe(channel, keep_going=True) as subscriber:
            freeze(pid)
            try:
                started = time.monotonic()
                with anyio.fail_after(10):
                    marker = await subscriber.get()
                assert isinstance(marker, Gap)
                assert "probe" in marker.reason
                assert time.monotonic() - started < 3.0
            finally:
                os.kill(pid, signal.SIGCONT)
            await wait_healthy(broadcast)
            await broadcast.publish(channel, "thawed")
            with anyio.fail_after(15):
                event = await subscriber.get()
            assert isinstance(event, Event)
            assert event.message == "thawed"


def test_an_event_loop_ending_while_the_broker_is_frozen_leaves_no_socket_open(
    kafka_url: str, channel: str, services: ModuleType, unraisable: list[str]
):
    """A publish times out against a frozen broker and stays queued, so closing leaves the
    producer's stop waiting in the background; then ``asyncio.run`` ends and cancels it. Its
    sockets are closed all the same: none is garbage collected open (a ResourceWarning)."""
    pid = broker_pid(services)

    async def publish_then_close_while_frozen() -> int:
        async with Broadcast(kafka_url, **FAULTY) as broadcast:
            await broadcast.publish(channel, "before")
            freeze(pid)
            with pytest.raises(BackboneUnavailable):
                await broadcast.publish(channel, "queued while frozen")
        return len(asyncio.all_tasks()) - 1  # what the close left running

    try:
        left_running = asyncio.run(publish_then_close_while_frozen())
    finally:
        os.kill(pid, signal.SIGCONT)
    gc.collect()
    assert left_running, "the producer's stop was meant to outlive the close"
    assert unraisable == []
