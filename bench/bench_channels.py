"""Many channels: 10,000 subscriptions entered at once, and restored after a lost connection.

Prints, for Redis and PostgreSQL, beside the raw client in the same run:

1. 10,000 ``subscribe()`` calls entered concurrently through one ``Broadcast`` until every one is
   live, against raw redis-py (one ``PubSub``, SUBSCRIBE per channel, until all are confirmed)
   and raw asyncpg (``add_listener`` per channel, one round trip each);
2. the restore: with the 10,000 channels subscribed, the server kills the listening connection
   (Redis ``CLIENT KILL TYPE pubsub``, PostgreSQL ``pg_terminate_backend``); the time from the
   kill until ``health()`` says ``connected`` (every channel live again on the new connection).

Goals (issue 14): 10,000 channels restored within 0.5 s of the reconnect on both; entering them
within 1.2x raw redis-py on Redis and within 0.5 s on PostgreSQL. Asserts nothing.

    uv run python bench/bench_channels.py [--channels 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from contextlib import AsyncExitStack
from typing import Any

import anyio

from opal_broadcast import Broadcast

REDIS = "redis://127.0.0.1:26379/0"
POSTGRES = "postgresql://opal@127.0.0.1:25432/opal"
FAST = {"reconnect_max_delay": 0.05, "connect_timeout": 30}


def names(count: int) -> list[str]:
    prefix = uuid.uuid4().hex[:8]
    return [f"ch-{prefix}-{i}" for i in range(count)]


async def enter_all(broadcast: Broadcast, channels: list[str], stack: AsyncExitStack) -> float:
    """Seconds until every channel's subscribe() has returned (all entered concurrently, as
    asyncio tasks: an anyio task group alone costs about 45 us per task here)."""
    started = time.perf_counter()
    await asyncio.gather(
        *(stack.enter_async_context(broadcast.subscribe(c, keep_going=True)) for c in channels)
    )
    return time.perf_counter() - started


async def wait_for(predicate: Any, timeout: float = 60) -> None:
    """Poll ``predicate`` every millisecond (health() has no event to wait on)."""
    with anyio.fail_after(timeout):
        while True:
            if predicate():
                return
            await anyio.sleep(0.001)


async def ours(url: str, count: int, kill: Any) -> tuple[float, float]:
    """(seconds to enter ``count`` subscriptions, seconds from the kill to all restored)."""
    channels = names(count)
    async with Broadcast(url, **FAST) as broadcast, AsyncExitStack() as stack:
        entered = await enter_all(broadcast, channels, stack)
        started = time.perf_counter()
        await kill()
        await wait_for(lambda: broadcast.health().state != "connected")
        await wait_for(lambda: broadcast.health().state == "connected")
        restored = time.perf_counter() - started
        assert broadcast.health().channels == count
    return entered, restored


async def raw_redis(url: str, count: int) -> float:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    pubsub = client.pubsub()
    try:
        started = time.perf_counter()
        for channel in names(count):
            await pubsub.subscribe(channel)
        confirmed = 0
        while confirmed < count:
            message = await pubsub.get_message(timeout=5)
            if message is not None and message["type"] == "subscribe":
                confirmed += 1
        return time.perf_counter() - started
    finally:
        await pubsub.aclose()
        await client.aclose()


async def raw_postgres(url: str, count: int) -> float:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        for channel in names(count):
            await connection.add_listener(channel, lambda *args: None)
        return time.perf_counter() - started
    finally:
        await connection.close()


async def kill_redis_pubsub() -> None:
    import redis.asyncio as redis

    admin = redis.Redis.from_url(REDIS)
    try:
        await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    finally:
        await admin.aclose()


async def kill_postgres_listeners() -> None:
    import asyncpg

    admin = await asyncpg.connect(POSTGRES.replace("//opal@", "//postgres@"))
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE '%/listen'"
        )
    finally:
        await admin.close()


async def main(count: int, rounds: int) -> None:
    print(f"{count:,} channels, median of {rounds} rounds")
    for label, url, raw, kill in (
        ("Redis", REDIS, raw_redis, kill_redis_pubsub),
        ("PostgreSQL", POSTGRES, raw_postgres, kill_postgres_listeners),
    ):
        entered, restored, raws = [], [], []
        for _ in range(rounds):
            raws.append(await raw(url, count))
            e, r = await ours(url, count, kill)
            entered.append(e)
            restored.append(r)
        e, r, w = (statistics.median(x) for x in (entered, restored, raws))
        print(
            f"  {label:<10} enter {count:,} concurrently: {e:6.2f} s vs raw {w:6.2f} s "
            f"({e / w:.2f}x); restore after a kill: {r:6.3f} s"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--channels", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.channels, arguments.rounds))
