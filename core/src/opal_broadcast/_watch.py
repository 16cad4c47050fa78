"""``opal-broadcast watch``: a live view of a backbone, refreshed once a second.

It subscribes to the channels given (counting messages per second on each), publishes a probe
on a private channel five times a second and times its round trip (p50 and p99 over the last
minute), and shows the connection's state, reconnects, gaps and rejected payloads from
``health()``. ``--json`` prints the same as one JSON object per line for scripts; the terminal
view needs rich (``pip install 'opal-broadcast[watch]'``).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from ._broadcast import Broadcast
from ._errors import BackboneError, ConfigurationError
from ._events import Gap

__all__ = ["Sample", "watch"]

#: Seconds between probes, and how many round trips the percentiles cover (a minute's worth).
PROBE_EVERY = 0.2
PROBES_KEPT = 300


@dataclass
class Sample:
    """One second of the view."""

    at: float
    url: str
    state: str
    reconnects: int
    gaps: int
    rejected: int
    rates: dict[str, float]
    p50_ms: float | None
    p99_ms: float | None
    probe_failures: int

    def as_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


@dataclass
class _Counters:
    received: dict[str, int] = field(default_factory=dict)
    round_trips: deque[float] = field(default_factory=lambda: deque(maxlen=PROBES_KEPT))
    probe_failures: int = 0


def require_rich() -> Any:
    """The rich package, or a ConfigurationError saying how to get it."""
    try:
        import rich.live
        import rich.table
    except ImportError:
        raise ConfigurationError(
            "The live view needs rich: pip install 'opal-broadcast[watch]' (or use --json)."
        ) from None
    return rich


async def watch(
    url: str, channels: Sequence[str], *, as_json: bool, seconds: float | None = None
) -> None:
    """Run the view until cancelled (Ctrl-C), or for ``seconds``."""
    rich = None if as_json else require_rich()
    counters = _Counters(received=dict.fromkeys(channels, 0))
    probe_channel = f"opal-broadcast-watch-{os.getpid()}-{time.monotonic_ns()}"
    async with (
        Broadcast(url, gap_policy="continue") as broadcast,
        anyio.create_task_group() as tasks,
    ):
        for channel in channels:
            await tasks.start(_count, broadcast, channel, counters)
        await tasks.start(_probe, broadcast, probe_channel, counters)
        with anyio.move_on_after(seconds if seconds is not None else float("inf")):
            if rich is None:
                await _print_lines(broadcast, counters)
            else:
                await _show_live(rich, broadcast, counters)
        tasks.cancel_scope.cancel()


async def _count(
    broadcast: Broadcast, channel: str, counters: _Counters, *, task_status: Any
) -> None:
    async with broadcast.subscribe(channel, keep_going=True, max_queue=1_000_000) as subscriber:
        task_status.started()
        async for item in subscriber:
            if not isinstance(item, Gap):
                counters.received[channel] += 1


async def _probe(
    broadcast: Broadcast, channel: str, counters: _Counters, *, task_status: Any
) -> None:
    async with broadcast.subscribe(channel, keep_going=True) as subscriber:
        task_status.started()
        while True:
            await anyio.sleep(PROBE_EVERY)
            sent = time.perf_counter()
            try:
                with anyio.fail_after(5):
                    await broadcast.publish(channel, str(sent))
                    while True:  # skip markers and late answers to earlier probes
                        item = await subscriber.get()
                        if not isinstance(item, Gap) and item.message == str(sent):
                            break
            except (TimeoutError, BackboneError):
                counters.probe_failures += 1
                continue
            counters.round_trips.append(time.perf_counter() - sent)


def _sample(
    broadcast: Broadcast, counters: _Counters, last: dict[str, int], elapsed: float
) -> Sample:
    health = broadcast.health()
    rates = {
        channel: (count - last.get(channel, 0)) / elapsed
        for channel, count in counters.received.items()
    }
    last.update(counters.received)
    trips = sorted(counters.round_trips)
    p50 = statistics.median(trips) * 1000 if trips else None
    p99 = trips[min(len(trips) - 1, int(len(trips) * 0.99))] * 1000 if trips else None
    return Sample(
        at=time.time(),
        url=health.url,
        state=health.state,
        reconnects=health.reconnects,
        gaps=health.gaps,
        rejected=health.rejected,
        rates=rates,
        p50_ms=p50,
        p99_ms=p99,
        probe_failures=counters.probe_failures,
    )


async def _every_second(
    broadcast: Broadcast, counters: _Counters, show: Callable[[Sample], None]
) -> None:
    last: dict[str, int] = {}
    previous = time.monotonic()
    while True:
        await anyio.sleep(1)
        now = time.monotonic()
        show(_sample(broadcast, counters, last, now - previous))
        previous = now


async def _print_lines(broadcast: Broadcast, counters: _Counters) -> None:
    await _every_second(broadcast, counters, lambda sample: print(sample.as_json(), flush=True))


async def _show_live(rich: Any, broadcast: Broadcast, counters: _Counters) -> None:
    with rich.live.Live(_table(rich, None), refresh_per_second=4, transient=False) as live:
        await _every_second(broadcast, counters, lambda sample: live.update(_table(rich, sample)))


def _table(rich: Any, sample: Sample | None) -> Any:
    table = rich.table.Table(title="opal-broadcast watch (Ctrl-C to exit)", show_header=False)
    if sample is None:
        table.add_row("connecting", "")
        return table

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} ms"

    table.add_row("url", sample.url)
    table.add_row("state", sample.state)
    table.add_row("round trip p50 / p99", f"{ms(sample.p50_ms)} / {ms(sample.p99_ms)}")
    table.add_row("probe failures", str(sample.probe_failures))
    table.add_row("reconnects", str(sample.reconnects))
    table.add_row("gaps", str(sample.gaps))
    table.add_row("rejected payloads", str(sample.rejected))
    for channel, rate in sample.rates.items():
        table.add_row(f"{channel} messages/s", f"{rate:.1f}")
    return table
