"""opal-broadcast on Redis against raw redis-py, in the same run, printed as ratios.

The machine is noisy: each figure is the median of ``--rounds`` rounds. Within a round, the two
sides of a publishing comparison run in alternating blocks of a few hundred calls (latency here
drifts 2-3x within seconds); the subscriber comparisons alternate which side goes first each round.
Messages for the subscriber figures come from a separate publisher process (this script with
``--publisher``), so the CPU measured here is the subscriber's own.

    uv run python bench/bench_redis.py [--rounds 5] [--messages 5000] [--url redis://127.0.0.1:26379/0]

With hiredis installed (``uv run --with hiredis ...``) both sides parse RESP with it; ``--parser
python`` keeps ours on the pure-Python parser, for the comparison of parsers in one sitting.

Targets (from the issue): publish calls/s >= 0.95x raw; subscriber CPU per delivered message
<= 1.10x raw; 10 subscribers in one process >= 2.5x the per-subscriber rate of 10 raw connections;
a new Broadcast per publish <= 1.5x the time of a reused one; 50 concurrent publishing tasks
>= 3x one awaited publisher; 1,000 idle subscriptions <= 2 KB each.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from contextlib import AsyncExitStack

import redis
import redis.asyncio as aioredis
from _measure import (
    Block,
    channel_name,
    idle_subscription_bytes,
    interleaved,
    many_publishers,
    median_ratio,
    one_publisher,
    opal_pattern,
    verdict,
)

from opal_broadcast import Broadcast

PAYLOAD = b"x" * 100
STOP = b"stop"


# -- the publisher process -------------------------------------------------------------------


def publisher_main(url: str, channel: str, count: int) -> None:
    """Connect, say ready, wait for 'go' on stdin, PUBLISH ``count`` messages then STOP."""
    client = redis.Redis.from_url(url)
    client.ping()
    print("ready", flush=True)
    sys.stdin.readline()
    batch = 200
    for start in range(0, count, batch):
        with client.pipeline(transaction=False) as pipe:
            for _ in range(min(batch, count - start)):
                pipe.publish(channel, PAYLOAD)
            pipe.execute()
    client.publish(channel, STOP)
    client.close()


class Publisher:
    """The publisher process, started and waiting for 'go'."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, url: str, channel: str, count: int) -> Publisher:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--publisher",
            url,
            channel,
            str(count),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        line = await process.stdout.readline()
        assert line.strip() == b"ready", line
        return cls(process)

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")

    async def wait(self) -> None:
        await self.process.wait()


# -- measurements: each returns seconds (per message, or in total) ---------------------------


class RoundTrip(asyncio.Protocol):
    """The floor: one PUBLISH written on a bare asyncio socket, its reply awaited, nothing else."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(data)  # ":<n>\r\n" fits in one read on loopback

    @classmethod
    async def open(cls, url: str) -> RoundTrip:
        parsed = aioredis.connection.parse_url(url)
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            cls, parsed.get("host", "127.0.0.1"), parsed.get("port", 6379)
        )
        return protocol

    def block(self, channel: str) -> Block:
        command = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(channel),
            channel.encode(),
            len(PAYLOAD),
            PAYLOAD,
        )
        loop = asyncio.get_running_loop()

        async def run(size: int) -> None:
            for _ in range(size):
                self.reply = loop.create_future()
                self.transport.write(command)  # type: ignore[attr-defined]
                await self.reply

        return run


async def publish_pair(url: str, count: int) -> tuple[float, ...]:
    """Seconds per awaited publish: raw redis-py, opal-broadcast, and the bare socket's floor."""
    channel = channel_name()
    client = aioredis.Redis.from_url(url)
    await client.ping()
    floor = await RoundTrip.open(url)
    async with Broadcast(url, share_connection=False) as broadcast:
        result = await interleaved(
            count,
            one_publisher(client.publish, channel, PAYLOAD),
            one_publisher(broadcast.publish, channel, PAYLOAD),
            floor.block(channel),
        )
    floor.transport.close()  # type: ignore[attr-defined]
    await client.aclose()
    return result


async def concurrency(url: str, count: int, tasks: int) -> tuple[float, float, float, float]:
    """Seconds per publish: (raw one, raw with ``tasks`` tasks, ours one, ours with ``tasks``)."""
    channel = channel_name()
    client = aioredis.Redis.from_url(url)
    await client.ping()
    async with Broadcast(url, share_connection=False) as broadcast:
        # a block of `many` sends tasks * (size // tasks) == size messages, like `one`.
        raw_one, raw_many = await interleaved(
            count,
            one_publisher(client.publish, channel, PAYLOAD),
            many_publishers(client.publish, channel, PAYLOAD, tasks),
            block=500,
        )
        ours_one, ours_many = await interleaved(
            count,
            one_publisher(broadcast.publish, channel, PAYLOAD),
            many_publishers(broadcast.publish, channel, PAYLOAD, tasks),
            block=500,
        )
    await client.aclose()
    return raw_one, raw_many, ours_one, ours_many


async def receive_raw(url: str, count: int, subscribers: int) -> tuple[float, float]:
    """(CPU seconds per message, wall seconds in total) for ``subscribers`` raw connections."""
    channel = channel_name()
    clients = [aioredis.Redis.from_url(url) for _ in range(subscribers)]
    pubsubs = [client.pubsub() for client in clients]
    for pubsub in pubsubs:
        await pubsub.subscribe(channel)
        await pubsub.get_message(timeout=5)  # the subscribe confirmation

    async def consume(pubsub: aioredis.client.PubSub) -> None:
        got = 0
        async for message in pubsub.listen():
            if message["type"] == "message":
                if message["data"] == STOP:
                    break
                got += 1
        assert got == count, got

    publisher = await Publisher.start(url, channel, count)
    cpu, wall = time.process_time(), time.perf_counter()
    publisher.go()
    await asyncio.gather(*(consume(pubsub) for pubsub in pubsubs))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await publisher.wait()
    for pubsub, client in zip(pubsubs, clients, strict=True):
        await pubsub.aclose()
        await client.aclose()
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

        async def consume(subscriber: object) -> None:
            got = 0
            async for event in subscriber:  # type: ignore[attr-defined]
                if event.message == "stop":
                    break
                got += 1
            assert got == count, got

        publisher = await Publisher.start(url, channel, count)
        cpu, wall = time.process_time(), time.perf_counter()
        publisher.go()
        await asyncio.gather(*(consume(subscriber) for subscriber in subs))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await publisher.wait()
    return cpu / count, wall


async def opal_pattern_unheld(url: str, count: int) -> float:
    """Seconds per publish with a new Broadcast each time and nothing holding the connection."""
    channel = channel_name()
    started = time.perf_counter()
    for _ in range(count):
        async with Broadcast(url) as fresh:
            await fresh.publish(channel, PAYLOAD)
    return (time.perf_counter() - started) / count


# -- the run ---------------------------------------------------------------------------------


async def main(url: str, rounds: int, messages: int) -> None:
    print(f"Redis backbone benchmark, {url}, median of {rounds} rounds, {messages} messages")
    from redis.utils import HIREDIS_AVAILABLE

    from opal_broadcast_redis._hiredis import parser_name

    print(f"  redis-py {redis.__version__}, Python {sys.version.split()[0]}")
    print(
        f"  RESP parser: redis-py {'hiredis' if HIREDIS_AVAILABLE else 'python'}, "
        f"ours {parser_name()}"
    )

    pairs = [await publish_pair(url, messages) for _ in range(rounds)]
    raw = statistics.median(p[0] for p in pairs)
    ours = statistics.median(p[1] for p in pairs)
    ratio = median_ratio(pairs, 0, 1)
    floor = statistics.median(p[2] for p in pairs)
    print(
        f"1. publish, one awaited publisher: raw {1 / raw:9.0f}/s  ours {1 / ours:9.0f}/s  "
        f"ratio {ratio:5.2f}x  (target >= 0.95x) {verdict(ratio >= 0.95)}"
    )
    print(
        f"   (floor, a bare asyncio socket's PUBLISH round trip: {1 / floor:.0f}/s; ours/floor "
        f"{median_ratio(pairs, 2, 1):.2f}x, raw/floor {median_ratio(pairs, 2, 0):.2f}x: no "
        f"awaited publish beats raw by more than {median_ratio(pairs, 0, 2):.2f}x here)"
    )

    cpu_raw, cpu_ours = [], []
    wall_raw, wall_ours = [], []
    for round_ in range(rounds):
        order = [("raw", receive_raw), ("ours", receive_ours)]
        for name, function in order if round_ % 2 == 0 else order[::-1]:
            cpu, _ = await function(url, messages, 1)
            (cpu_raw if name == "raw" else cpu_ours).append(cpu)
            _, wall = await function(url, messages, 10)
            (wall_raw if name == "raw" else wall_ours).append(wall)
    raw, ours = statistics.median(cpu_raw), statistics.median(cpu_ours)
    ratio = ours / raw
    print(
        f"2. subscriber CPU per message:     raw {raw * 1e6:8.1f} us  ours {ours * 1e6:8.1f} us  "
        f"ratio {ratio:5.2f}x  (target <= 1.10x) {verdict(ratio <= 1.10)}"
    )
    raw, ours = statistics.median(wall_raw), statistics.median(wall_ours)
    ratio = raw / ours
    print(
        f"3. 10 subscribers, per-subscriber: raw {messages / raw:8.0f}/s  ours "
        f"{messages / ours:8.0f}/s  ratio {ratio:5.2f}x  (target >= 2.5x) {verdict(ratio >= 2.5)}"
    )

    pairs = [await opal_pattern(url, messages // 2, PAYLOAD) for _ in range(rounds)]
    new_each = statistics.median(p[0] for p in pairs)
    reused = statistics.median(p[1] for p in pairs)
    ratio = median_ratio(pairs, 0, 1)
    unheld = statistics.median([await opal_pattern_unheld(url, 200) for _ in range(rounds)])
    print(
        f"4. new Broadcast per publish:      {new_each * 1e6:8.1f} us vs reused "
        f"{reused * 1e6:.1f} us  ratio {ratio:5.2f}x  (target <= 1.5x) {verdict(ratio <= 1.5)}"
    )
    print(
        f"   (with no other Broadcast holding the URL: {unheld * 1e6:.0f} us per publish, "
        f"{unheld / reused:.0f}x: each one opens its own connections)"
    )

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
        f"   (raw redis-py: {1 / raw_many:.0f}/s with 50 tasks vs {1 / raw_one:.0f}/s, "
        f"{median_ratio(quads, 0, 1):.2f}x; with 50 tasks ours/raw "
        f"{median_ratio(quads, 1, 3):.2f}x)"
    )

    distinct = statistics.median(
        [await idle_subscription_bytes(url, 1000, True) for _ in range(max(1, rounds // 2))]
    )
    shared = statistics.median(
        [await idle_subscription_bytes(url, 1000, False) for _ in range(max(1, rounds // 2))]
    )
    print(
        f"6. 1,000 idle subscriptions:       {distinct:6.0f} B each on distinct channels, "
        f"{shared:.0f} B each on one channel  (target <= 2048 B) {verdict(distinct <= 2048)}"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--publisher":
        publisher_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--url", default="redis://127.0.0.1:26379/0")
    parser.add_argument(
        "--parser",
        choices=("auto", "python"),
        default="auto",
        help="ours: hiredis when installed (auto), or the pure-Python parser whatever is installed",
    )
    arguments = parser.parse_args()
    if arguments.parser == "python":
        from opal_broadcast_redis import _hiredis

        _hiredis._hiredis = None
    asyncio.run(main(arguments.url, arguments.rounds, arguments.messages))
