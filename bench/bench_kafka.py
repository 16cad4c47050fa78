"""opal-broadcast on Kafka against raw aiokafka, in the same run, printed as ratios.

The machine is noisy: each figure is the median of ``--rounds`` rounds. Within a round, the two
sides of a publishing comparison run in alternating blocks of a few hundred calls; the subscriber
comparisons alternate which side goes first each round. Messages for the subscriber figures come
from a separate publisher process (this script with ``--publisher``), so the CPU measured here is
the subscriber's own. Both sides use the same consumer settings (the plugin's: fetch_min_bytes=1,
fetch_max_wait_ms=100) and the same acks (all), so the ratios show what opal-broadcast adds.

    uv run python bench/bench_kafka.py [--rounds 5] [--messages 5000] [--url kafka://127.0.0.1:29092]

Targets (from the issue): publish calls/s >= 0.95x raw; subscriber CPU per delivered message
<= 1.10x raw; 10 subscribers in one process >= 2.5x the per-subscriber rate of 10 raw
connections; a new Broadcast per publish <= 1.5x the time of a reused one; 50 concurrent
publishing tasks >= 3x one awaited publisher; 1,000 idle subscriptions <= 2 KB each; latency p50
<= 5 ms on the loopback broker.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiokafka
from _measure import (
    channel_name,
    idle_subscription_bytes,
    interleaved,
    many_publishers,
    median_ratio,
    one_publisher,
    opal_pattern,
    percentile,
    verdict,
)
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from opal_broadcast import BackboneURL, Broadcast

TEXT = "x" * 100
#: The plugin's consumer settings, given to the raw consumers too.
CONSUMER = {"fetch_min_bytes": 1, "fetch_max_wait_ms": 100, "enable_auto_commit": False}


def servers(url: str) -> str:
    return ",".join(f"{h.host}:{h.port or 9092}" for h in BackboneURL.parse(url).hosts)


# -- the publisher process -------------------------------------------------------------------


async def publisher_main(url: str, topic: str, count: int) -> None:
    """Connect, say ready, wait for 'go' on stdin, produce ``count`` messages, say done."""
    producer = AIOKafkaProducer(bootstrap_servers=servers(url), linger_ms=5)
    await producer.start()
    await producer.partitions_for(topic)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    payload = TEXT.encode()
    for _ in range(count):
        await producer.send(topic, payload)
    await producer.flush()
    print("done", flush=True)
    await producer.stop()


class Publisher:
    """The publisher process, started and waiting for 'go'.

    Deliberately synchronous: :meth:`publish` blocks this process's event loop until the
    publisher is done, so the subscribers then read a backlog as fast as they can, and the
    figures measure their own work rather than the publisher's pace.
    """

    def __init__(self, url: str, topic: str, count: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--publisher", url, topic, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip() == b"ready", line

    def publish(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line.strip() == b"done", line

    def close(self) -> None:
        self.process.wait(timeout=30)


async def create_topic(url: str, topic: str) -> None:
    """Create ``topic`` the way the plugin does (a Broadcast publish)."""
    async with Broadcast(url, share_connection=False) as broadcast:
        await broadcast.publish(topic, "create")


# -- measurements: each returns seconds (per message, or in total) ---------------------------


async def raw_producer(url: str) -> Any:
    producer = AIOKafkaProducer(bootstrap_servers=servers(url), acks="all", linger_ms=0)
    await producer.start()
    return producer


async def publish_pair(url: str, count: int) -> tuple[float, float]:
    """Seconds per awaited publish: raw aiokafka, then opal-broadcast."""
    channel = channel_name()
    await create_topic(url, channel)
    producer = await raw_producer(url)
    async with Broadcast(url, share_connection=False) as broadcast:
        await broadcast.publish(channel, TEXT)

        async def raw(size: int) -> None:
            for _ in range(size):
                await producer.send_and_wait(channel, TEXT.encode())

        async def ours(size: int) -> None:
            for _ in range(size):
                await broadcast.publish(channel, TEXT)

        result = await interleaved(count, raw, ours)
    await producer.stop()
    return result


async def concurrency(url: str, count: int, tasks: int) -> tuple[float, float, float, float]:
    """Seconds per publish: (raw one, raw with ``tasks`` tasks, ours one, ours with ``tasks``)."""
    channel = channel_name()
    await create_topic(url, channel)
    producer = await raw_producer(url)

    async def raw_publish(channel: str, text: str) -> None:
        await producer.send_and_wait(channel, text.encode())

    async with Broadcast(url, share_connection=False) as broadcast:
        raw_one, raw_many = await interleaved(
            count,
            one_publisher(raw_publish, channel, TEXT),
            many_publishers(raw_publish, channel, TEXT, tasks),
            block=500,
        )
        ours_one, ours_many = await interleaved(
            count,
            one_publisher(broadcast.publish, channel, TEXT),
            many_publishers(broadcast.publish, channel, TEXT, tasks),
            block=500,
        )
    await producer.stop()
    return raw_one, raw_many, ours_one, ours_many


async def receive_raw(url: str, count: int, subscribers: int, batch: bool) -> tuple[float, float]:
    """(CPU seconds per message, wall seconds in total) for ``subscribers`` raw consumers.

    ``batch``: read with ``getmany()``; else ``async for record in consumer`` (``getone()``,
    aiokafka's documented loop and what encode/broadcaster does).
    """
    topic = channel_name()
    await create_topic(url, topic)
    partition = TopicPartition(topic, 0)
    consumers = [
        AIOKafkaConsumer(bootstrap_servers=servers(url), group_id=None, **CONSUMER)
        for _ in range(subscribers)
    ]
    await asyncio.gather(*(consumer.start() for consumer in consumers))
    for consumer in consumers:
        end = (await consumer.end_offsets([partition]))[partition]
        consumer.assign([partition])
        consumer.seek(partition, end)

    async def consume(consumer: Any) -> None:
        got = 0
        if batch:
            while got < count:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for record in records:
                        record.value.decode()
                        got += 1
        else:
            async for record in consumer:
                record.value.decode()
                got += 1
                if got == count:
                    break

    publisher = Publisher(url, topic, count)
    publisher.publish()
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(consume(consumer) for consumer in consumers))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    publisher.close()
    await asyncio.gather(*(consumer.stop() for consumer in consumers))
    return cpu / count, wall


async def receive_ours(url: str, count: int, subscribers: int) -> tuple[float, float]:
    """(CPU seconds per message, wall seconds in total) for ``subscribers`` local subscribers."""
    channel = channel_name()
    async with AsyncExitStack() as stack:
        broadcast = await stack.enter_async_context(
            Broadcast(url, share_connection=False, max_queue=count + 10)
        )
        subs = [
            await stack.enter_async_context(broadcast.subscribe(channel))
            for _ in range(subscribers)
        ]

        async def consume(subscriber: Any) -> None:
            got = 0
            async for _event in subscriber:
                got += 1
                if got == count:
                    break

        publisher = Publisher(url, channel, count)
        publisher.publish()
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(consume(subscriber) for subscriber in subs))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        publisher.close()
    return cpu / count, wall


async def latency_ours(url: str, count: int) -> list[float]:
    """Seconds from before publish() to the subscriber's get(), one message at a time."""
    channel = channel_name()
    samples = []
    async with Broadcast(url, share_connection=False) as broadcast:
        async with broadcast.subscribe(channel) as subscriber:
            for _ in range(count):
                started = time.perf_counter()
                await broadcast.publish(channel, TEXT)
                await subscriber.get()
                samples.append(time.perf_counter() - started)
                await asyncio.sleep(0.002)
    return samples


async def latency_raw(url: str, count: int, **consumer_options: Any) -> list[float]:
    """The same with a raw producer and consumer (aiokafka's fetch defaults unless given)."""
    topic = channel_name()
    await create_topic(url, topic)
    partition = TopicPartition(topic, 0)
    producer = await raw_producer(url)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers(url),
        group_id=None,
        **{"enable_auto_commit": False, **consumer_options},
    )
    await consumer.start()
    consumer.assign([partition])
    consumer.seek(partition, (await consumer.end_offsets([partition]))[partition])
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await producer.send_and_wait(topic, TEXT.encode())
        got = False
        while not got:
            got = bool(await consumer.getmany(timeout_ms=2000))
        samples.append(time.perf_counter() - started)
        await asyncio.sleep(0.002)
    await asyncio.gather(producer.stop(), consumer.stop())
    return samples


# -- the run ---------------------------------------------------------------------------------


async def main(url: str, rounds: int, messages: int, only: str) -> None:
    print(f"Kafka backbone benchmark, {url}, median of {rounds} rounds, {messages} messages")
    print(f"  aiokafka {aiokafka.__version__}, Python {sys.version.split()[0]}")

    if "1" in only:
        await publish_figures(url, rounds, messages)
    if "2" in only or "3" in only:
        await subscriber_figures(url, rounds, messages)
    if "4" in only:
        await opal_figures(url, rounds, messages)
    if "5" in only:
        await concurrency_figures(url, rounds, messages)
    if "6" in only:
        await memory_figures(url, rounds)
    if "7" in only:
        await latency_figures(url, rounds)


async def publish_figures(url: str, rounds: int, messages: int) -> None:
    pairs = [await publish_pair(url, messages // 2) for _ in range(rounds)]
    raw = statistics.median(p[0] for p in pairs)
    ours = statistics.median(p[1] for p in pairs)
    ratio = median_ratio(pairs, 0, 1)
    print(
        f"1. publish, one awaited publisher: raw {1 / raw:9.0f}/s  ours {1 / ours:9.0f}/s  "
        f"ratio {ratio:5.2f}x  (target >= 0.95x) {verdict(ratio >= 0.95)}"
    )


async def subscriber_figures(url: str, rounds: int, messages: int) -> None:
    cpu: dict[str, list[float]] = {"raw": [], "batch": [], "ours": []}
    wall: dict[str, list[float]] = {"raw": [], "ours": []}
    for round_ in range(rounds):
        sides: list[tuple[str, Callable[[int, int], Awaitable[tuple[float, float]]]]] = [
            ("raw", lambda n, s: receive_raw(url, n, s, batch=False)),
            ("batch", lambda n, s: receive_raw(url, n, s, batch=True)),
            ("ours", lambda n, s: receive_ours(url, n, s)),
        ]
        for name, function in sides if round_ % 2 == 0 else sides[::-1]:
            cpu[name].append((await function(messages * 4, 1))[0])
            if name != "batch":
                wall[name].append((await function(messages * 2, 10))[1])
    raw, batch, ours = (statistics.median(cpu[name]) for name in ("raw", "batch", "ours"))
    ratio = ours / raw
    print(
        f"2. subscriber CPU per message:     raw {raw * 1e6:8.1f} us  ours {ours * 1e6:8.1f} us  "
        f"ratio {ratio:5.2f}x  (target <= 1.10x) {verdict(ratio <= 1.10)}"
    )
    print(
        f"   (raw is aiokafka's 'async for record in consumer', as encode/broadcaster reads; a "
        f"raw getmany() loop takes {batch * 1e6:.1f} us: ours/getmany {ours / batch:.2f}x)"
    )
    raw, ours = statistics.median(wall["raw"]), statistics.median(wall["ours"])
    ratio = raw / ours
    print(
        f"3. 10 subscribers, per-subscriber: raw {messages * 2 / raw:8.0f}/s  ours "
        f"{messages * 2 / ours:8.0f}/s  ratio {ratio:5.2f}x  (target >= 2.5x) {verdict(ratio >= 2.5)}"
    )


async def opal_figures(url: str, rounds: int, messages: int) -> None:
    pairs = [await opal_pattern(url, messages // 4, TEXT) for _ in range(rounds)]
    new_each = statistics.median(p[0] for p in pairs)
    reused = statistics.median(p[1] for p in pairs)
    ratio = median_ratio(pairs, 0, 1)
    print(
        f"4. new Broadcast per publish:      {new_each * 1e6:8.1f} us vs reused "
        f"{reused * 1e6:.1f} us  ratio {ratio:5.2f}x  (target <= 1.5x) {verdict(ratio <= 1.5)}"
    )


async def concurrency_figures(url: str, rounds: int, messages: int) -> None:
    quads = [await concurrency(url, messages, 50) for _ in range(rounds)]
    raw_one, raw_many, ours_one, ours_many = (
        statistics.median(q[i] for q in quads) for i in range(4)
    )
    ratio = median_ratio(quads, 2, 3)
    print(
        f"5. 50 publishing tasks:            ours {1 / ours_many:9.0f}/s vs one publisher "
        f"{1 / ours_one:.0f}/s  ratio {ratio:5.2f}x  (target >= 3x) {verdict(ratio >= 3)}"
    )
    print(
        f"   (raw aiokafka: {1 / raw_many:.0f}/s with 50 tasks vs {1 / raw_one:.0f}/s, "
        f"{median_ratio(quads, 0, 1):.2f}x; with 50 tasks ours/raw "
        f"{median_ratio(quads, 1, 3):.2f}x)"
    )


async def memory_figures(url: str, rounds: int) -> None:
    shared = statistics.median(
        [await idle_subscription_bytes(url, 1000, False) for _ in range(max(1, rounds // 2))]
    )
    distinct = await idle_subscription_bytes(url, 100, True)
    print(
        f"6. 1,000 idle subscriptions:       {shared:6.0f} B each on one channel  "
        f"(target <= 2048 B) {verdict(shared <= 2048)}"
    )
    print(
        f"   (100 subscriptions on distinct channels, a topic each: {distinct:.0f} B each, "
        "the consumer's per-partition state included)"
    )


async def latency_figures(url: str, rounds: int) -> None:
    ours_samples: list[float] = []
    raw_samples: list[float] = []
    tuned_samples: list[float] = []
    for _ in range(rounds):
        ours_samples += await latency_ours(url, 200)
        raw_samples += await latency_raw(url, 200)
        tuned_samples += await latency_raw(url, 200, **CONSUMER)
    p50, p99 = percentile(ours_samples, 0.5), percentile(ours_samples, 0.99)
    print(
        f"7. latency publish -> receive:     ours p50 {p50 * 1e3:5.2f} ms  p99 "
        f"{p99 * 1e3:5.2f} ms  (target p50 <= 5 ms) {verdict(p50 <= 0.005)}"
    )
    print(
        f"   (raw aiokafka, same fetch settings: p50 {percentile(tuned_samples, 0.5) * 1e3:.2f} "
        f"ms, p99 {percentile(tuned_samples, 0.99) * 1e3:.2f} ms; with aiokafka's defaults: p50 "
        f"{percentile(raw_samples, 0.5) * 1e3:.2f} ms, p99 "
        f"{percentile(raw_samples, 0.99) * 1e3:.2f} ms)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--publisher":
        asyncio.run(publisher_main(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--url", default="kafka://127.0.0.1:29092")
    parser.add_argument("--only", default="1234567", help="the figures to measure, e.g. 23")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.url, arguments.rounds, arguments.messages, arguments.only))
