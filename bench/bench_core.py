"""Per-message cost of the core on memory://, its publish overhead over the plugin's, and the OPAL
pattern.

Prints numbers; asserts nothing. The machine is noisy: each figure is the median of several
alternating rounds. Run: uv run python bench/bench_core.py [--rounds 7] [--messages 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio
from _measure import idle_subscription_bytes, opal_pattern

from opal_broadcast import Broadcast


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


async def fan_out(subscribers: int, messages: int) -> float:
    """Seconds per message: publish, fan out to N subscribers, every subscriber receives it."""
    async with Broadcast("memory://bench-fanout", max_queue=messages + 1) as broadcast:
        async with anyio.create_task_group() as tasks:
            ready = anyio.Event()
            entered = [0]

            async def consume() -> None:
                async with broadcast.subscribe("c") as subscriber:
                    entered[0] += 1
                    if entered[0] == subscribers:
                        ready.set()
                    for _ in range(messages):
                        await subscriber.get()

            for _ in range(subscribers):
                tasks.start_soon(consume)
            await ready.wait()
            started = time.perf_counter()
            for _ in range(messages):
                await broadcast.publish("c", "x")
        return (time.perf_counter() - started) / messages


async def overhead(messages: int) -> tuple[float, float]:
    """Seconds per ``Broadcast.publish``, and per call of the connection's own ``publish``."""
    async with Broadcast("memory://bench-overhead") as broadcast:
        hub = broadcast._hub
        assert hub is not None
        connection = hub.connection
        started = time.perf_counter()
        for _ in range(messages):
            await broadcast.publish("c", "x")
        through_core = (time.perf_counter() - started) / messages
        started = time.perf_counter()
        for _ in range(messages):
            await connection.publish("c", "x")
        direct = (time.perf_counter() - started) / messages
    return through_core, direct


async def main(rounds: int, messages: int) -> None:
    idle = await idle_subscription_bytes("memory://bench-idle", 1000, True)
    one, hundred, routed, direct, new_each, reused = [], [], [], [], [], []
    for _ in range(rounds):
        one.append(await fan_out(1, messages))
        hundred.append(await fan_out(100, messages // 20))
        r, d = await overhead(messages)
        routed.append(r)
        direct.append(d)
        n, u = await opal_pattern("memory://bench-opal", messages // 4, "x")
        new_each.append(n)
        reused.append(u)
    print(f"memory:// core benchmark, median of {rounds} rounds")
    print(f"  publish -> receive, 1 subscriber:    {median_us(one):8.2f} us/message")
    print(
        f"  publish -> receive, 100 subscribers: {median_us(hundred):8.2f} us/message "
        f"({median_us(hundred) / 100:.2f} us per delivery)"
    )
    extra = median_us(routed) - median_us(direct)
    print(
        f"  the core's share of a publish:       {extra:8.2f} us "
        f"(Broadcast.publish {median_us(routed):.2f} us vs the connection's own "
        f"{median_us(direct):.2f} us, no subscriber)"
    )
    print(
        f"  new Broadcast per publish:           {median_us(new_each):8.2f} us vs reused "
        f"{median_us(reused):.2f} us: ratio {statistics.median(new_each) / statistics.median(reused):.2f}x"
    )
    print(f"  idle subscription:                   {idle:8.0f} bytes each (1,000 channels)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--messages", type=int, default=20000)
    arguments = parser.parse_args()
    anyio.run(main, arguments.rounds, arguments.messages)
