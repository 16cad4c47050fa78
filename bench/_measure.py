"""What every benchmark script here shares: fair timing on a noisy machine, and the core's figures.

The scripts import it as ``_measure`` (Python puts a script's own folder first on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.lowlevel

from opal_broadcast import Broadcast

#: Runs ``size`` operations of one contender.
Block = Callable[[int], Awaitable[None]]


def one_publisher(
    publish: Callable[[str, Any], Awaitable[object]], channel: str, payload: object
) -> Block:
    """A block of awaited publishes, one after the other."""

    async def run(size: int) -> None:
        for _ in range(size):
            await publish(channel, payload)

    return run


def many_publishers(
    publish: Callable[[str, Any], Awaitable[object]], channel: str, payload: object, tasks: int
) -> Block:
    """A block of the same size shared by ``tasks`` concurrent publishing tasks."""

    async def run(size: int) -> None:
        async def work() -> None:
            for _ in range(max(1, size // tasks)):
                await publish(channel, payload)

        await asyncio.gather(*(work() for _ in range(tasks)))

    return run


def channel_name() -> str:
    """A channel no other run uses."""
    return f"bench-{uuid.uuid4().hex[:10]}"


async def interleaved(count: int, *sides: Block, block: int = 250) -> tuple[float, ...]:
    """Seconds per operation of each side, the sides run in alternating blocks.

    Latency here drifts by 2-3x within seconds (a shared, virtualised machine): alternating small
    blocks exposes every side to the same drift, which whole-run alternation does not. The order
    of the sides is rotated from one block to the next.
    """
    spent = [0.0] * len(sides)
    done = 0
    turn = 0
    while done < count:
        size = min(block, count - done)
        for offset in range(len(sides)):
            index = (turn + offset) % len(sides)
            started = time.perf_counter()
            await sides[index](size)
            spent[index] += time.perf_counter() - started
        done += size
        turn += 1
    return tuple(total / done for total in spent)


async def opal_pattern(url: str, count: int, payload: str | bytes) -> tuple[float, float]:
    """Seconds per publish: a new Broadcast each time, and a reused one (a listener holds the URL)."""
    channel = channel_name()
    async with Broadcast(url) as listener, listener.subscribe(channel + "-held"):
        await listener.publish(channel, payload)  # the backbone may create the channel lazily

        async def new_each(size: int) -> None:
            for _ in range(size):
                async with Broadcast(url) as fresh:
                    await fresh.publish(channel, payload)

        async def reused(size: int) -> None:
            for _ in range(size):
                await listener.publish(channel, payload)

        return await interleaved(count, new_each, reused)


async def idle_subscription_bytes(url: str, count: int, distinct: bool) -> float:
    """Bytes allocated per idle subscription (tracemalloc), on distinct channels or on one."""
    prefix = channel_name()
    async with Broadcast(url, share_connection=False) as broadcast, AsyncExitStack() as stack:
        async with broadcast.subscribe(prefix + "-warm"):
            pass
        if not distinct:  # the channel itself is paid for once, before measuring
            await stack.enter_async_context(broadcast.subscribe(prefix))
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for i in range(count):
            name = f"{prefix}-{i}" if distinct else prefix
            await stack.enter_async_context(broadcast.subscribe(name))
        # One turn of the event loop: the deadline timers of the subscribe calls, cancelled when
        # each returned, leave the loop's heap there (idle means after that, not during the burst).
        await anyio.lowlevel.checkpoint()
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        return grown / count


def median_ratio(pairs: list[tuple[float, ...]], top: int, bottom: int) -> float:
    """The median over rounds of ``pair[top] / pair[bottom]``."""
    return statistics.median(pair[top] / pair[bottom] for pair in pairs)


def verdict(ok: bool) -> str:
    """How a figure compares with its target."""
    return "ok" if ok else "MISSED"


def percentile(samples: list[float], fraction: float) -> float:
    """The sample at ``fraction`` of the sorted samples (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]
