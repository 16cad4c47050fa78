"""``opal-broadcast demo``: workers that all publish and all receive, like OPAL server workers.

Each worker has its own connection (in-process) or its own process (``--processes``), subscribes,
waits for the others, publishes its messages stamped with the send time, and counts what it
receives from everyone. The summary says whether every worker got every message, and how long
delivery took.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid

import anyio

from ._broadcast import Broadcast
from ._events import Event
from ._subscriber import Subscriber

__all__ = ["run_demo"]

DEADLINE = 60.0
#: Pause between one worker's publishes, so latency shows delivery time rather than a backlog.
PACE = 0.001


def run_demo(url: str, workers: int, messages: int, processes: bool, worker_of: str | None) -> int:
    """Run the demo; returns the exit status (0 when every message reached every worker)."""
    if worker_of is not None:
        return anyio.run(_child, url, workers, messages, worker_of)
    if processes and url.startswith("memory:"):
        print(
            "error: memory:// lives inside one process; use a real backbone with --processes",
            file=sys.stderr,
        )
        return 2
    return anyio.run(_parent, url, workers, messages, processes)


def _stamp(worker: int, seq: int) -> str:
    return f"{worker}:{seq}:{time.time_ns()}"


async def _receive_all(
    subscriber: Subscriber[Event], expected: int, counter: list[int]
) -> list[float]:
    latencies: list[float] = []
    with anyio.move_on_after(DEADLINE):
        while len(latencies) < expected:
            event = await subscriber.get()
            sent_ns = int(str(event.message).rsplit(":", 1)[1])
            latencies.append((time.time_ns() - sent_ns) / 1e6)
            counter[0] += 1
    return latencies


async def _parent(url: str, workers: int, messages: int, processes: bool) -> int:
    run = uuid.uuid4().hex[:8]
    data, control = f"opal-demo-{run}", f"opal-demo-{run}-control"
    total = workers * workers * messages
    counter = [0]
    results: list[list[float]] = []
    started = time.perf_counter()
    print(
        f"demo: {workers} worker(s) x {messages} message(s) over {Broadcast(url).url}"
        + (" in separate processes" if processes else "")
    )

    async def show_progress() -> None:
        while True:
            await anyio.sleep(0.25)
            if sys.stdout.isatty():
                print(f"\r  delivered {counter[0]}/{total}", end="", flush=True)

    if processes:
        async with Broadcast(url) as broadcast, broadcast.subscribe(control) as replies:
            children = [
                subprocess.Popen(  # noqa: ASYNC220 - spawning is instant; waiting runs in a thread
                    [
                        sys.executable,
                        "-m",
                        "opal_broadcast",
                        "demo",
                        url,
                        "--workers",
                        str(workers),
                        "--messages",
                        str(messages),
                        "--worker-of",
                        f"{run}:{index}",
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for index in range(workers)
            ]
            with anyio.fail_after(DEADLINE):
                waiting = workers
                while waiting:
                    waiting -= (await replies.get()).message == "ready"
            await broadcast.publish(control, "go")
            outputs = [await anyio.to_thread.run_sync(child.communicate) for child in children]
        for output, _ in outputs:
            line = (output.strip().splitlines() or ["[]"])[-1]
            results.append(json.loads(line))
        counter[0] = sum(len(r) for r in results)
    else:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(show_progress)
            ready, go = anyio.Event(), anyio.Event()
            subscribed = [0]

            async def worker(index: int) -> None:
                async with Broadcast(url, share_connection=False) as broadcast:
                    async with broadcast.subscribe(data, max_queue=total + 1) as subscriber:
                        subscribed[0] += 1
                        if subscribed[0] == workers:
                            ready.set()
                        await go.wait()
                        async with anyio.create_task_group() as inner:

                            async def send() -> None:
                                for seq in range(messages):
                                    await broadcast.publish(data, _stamp(index, seq))
                                    await anyio.sleep(PACE)

                            inner.start_soon(send)
                            results.append(
                                await _receive_all(subscriber, workers * messages, counter)
                            )

            async with anyio.create_task_group() as workers_group:
                for index in range(workers):
                    workers_group.start_soon(worker, index)
                await ready.wait()
                go.set()
            tasks.cancel_scope.cancel()
    return _summarise(results, workers, messages, time.perf_counter() - started)


async def _child(url: str, workers: int, messages: int, worker_of: str) -> int:
    run, index = worker_of.split(":")
    data, control = f"opal-demo-{run}", f"opal-demo-{run}-control"
    async with Broadcast(url) as broadcast:
        async with (
            broadcast.subscribe(data, max_queue=workers * messages + 1) as subscriber,
            broadcast.subscribe(control) as orders,
        ):
            await broadcast.publish(control, "ready")
            with anyio.fail_after(DEADLINE):
                while (await orders.get()).message != "go":
                    pass
            latencies: list[float] = []
            async with anyio.create_task_group() as tasks:

                async def send() -> None:
                    for seq in range(messages):
                        await broadcast.publish(data, _stamp(int(index), seq))
                        await anyio.sleep(PACE)

                tasks.start_soon(send)
                latencies = await _receive_all(subscriber, workers * messages, [0])
    print(json.dumps([round(x, 4) for x in latencies]))
    return 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _summarise(results: list[list[float]], workers: int, messages: int, elapsed: float) -> int:
    expected = workers * messages
    delivered = sum(len(r) for r in results)
    latencies = [x for r in results for x in r]
    print(
        f"\r  delivered {delivered}/{expected * workers} in {elapsed:.2f} s"
        f" ({delivered / elapsed:,.0f} deliveries/s)"
    )
    if latencies:
        print(
            "  latency ms: "
            + ", ".join(
                f"p{int(q * 100)} {_percentile(latencies, q):.3f}" for q in (0.5, 0.9, 0.99)
            )
            + f", max {max(latencies):.3f}"
        )
    complete = len(results) == workers and all(len(r) == expected for r in results)
    print(
        "ok: every worker received every message"
        if complete
        else "FAILED: some worker missed messages"
    )
    return 0 if complete else 1
