"""Design (a) of issue 15, measured: a subscriber on redis-py's public API.

CPU per received message of raw redis-py's ``PubSub.get_message`` against a loop on the public
``Connection.read_response()`` (the cheapest public way to read pushes: no PubSub bookkeeping, no
retry), with hiredis when it is installed. A plugin built on that design could do no better than
the second figure, plus the core's delivery; the plugin's own wire is in bench_redis.py (figure 2).
Messages come from a separate publisher process. Asserts nothing.

    uv run python bench/bench_redis_public_api.py [--messages 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.utils import HIREDIS_AVAILABLE

URL = "redis://127.0.0.1:26379/0"
HOST, PORT = "127.0.0.1", 26379
STOP = b"STOP"


def publish(channel: str, count: int) -> None:
    """The publisher process: ``count`` 100-byte messages, pipelined, then STOP."""
    client = redis.Redis.from_url(URL)
    pipeline = client.pipeline(transaction=False)
    for number in range(count):
        pipeline.publish(channel, b"x" * 100)
        if number % 500 == 499:
            pipeline.execute()
    pipeline.execute()
    client.publish(channel, STOP)


async def start_publisher(channel: str, count: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--publisher", channel, str(count)
    )


async def pubsub_cpu(channel: str, count: int) -> float:
    """Seconds of CPU per message through ``PubSub.get_message`` (raw redis-py)."""
    client = aioredis.Redis.from_url(URL)
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    publisher = await start_publisher(channel, count)
    started, received = time.process_time(), 0
    while True:
        message = await pubsub.get_message(timeout=5)
        if message is None:
            continue
        if message["data"] == STOP:
            break
        received += 1
    spent = time.process_time() - started
    await publisher.wait()
    await pubsub.aclose()
    await client.aclose()
    return spent / received


async def read_response_cpu(channel: str, count: int) -> float:
    """Seconds of CPU per message through ``Connection.read_response`` (public, no PubSub)."""
    connection = Connection(host=HOST, port=PORT, protocol=2)
    await connection.connect()
    await connection.send_command("SUBSCRIBE", channel)
    await connection.read_response()
    publisher = await start_publisher(channel, count)
    started, received = time.process_time(), 0
    read = connection.read_response
    while True:
        push = await read()
        if push[2] == STOP:
            break
        received += 1
    spent = time.process_time() - started
    await publisher.wait()
    await connection.disconnect()
    return spent / received


async def main(count: int, rounds: int) -> None:
    print(
        f"redis-py {redis.__version__}, parser {'hiredis' if HIREDIS_AVAILABLE else 'python'}, "
        f"{count} messages, median of {rounds} rounds"
    )
    pairs = [
        (
            await pubsub_cpu(f"bench-public-pubsub-{n}", count),
            await read_response_cpu(f"bench-public-read-{n}", count),
        )
        for n in range(rounds)
    ]
    pubsub = statistics.median(p[0] for p in pairs)
    read = statistics.median(p[1] for p in pairs)
    ratio = statistics.median(p[1] / p[0] for p in pairs)
    print(
        f"  CPU per message: PubSub.get_message {pubsub * 1e6:.2f} us, "
        f"Connection.read_response {read * 1e6:.2f} us ({ratio:.2f}x)"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--publisher"]:
        publish(sys.argv[2], int(sys.argv[3]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.messages, arguments.rounds))
