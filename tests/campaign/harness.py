"""The fault campaign's workers, publishers and scenario runner, the same on every backbone.

A scenario: two workers in this process, each with its own ``Broadcast`` on one URL (so they share
the process's connection, as OPAL's workers in one process do), subscribe to one channel and
behave as a consumer told to "subscribe again to resume" does: whenever an iteration ends with
``SubscriptionGap`` or raises, or ``subscribe()`` itself raises, they enter ``subscribe()`` again
at once (or after ``resubscribe_delay``). Two publishers send a numbered stream at 20 msg/s each and
never stop during faults (a failed publish is recorded, not fatal): one in this process on the
same shared connection, one in another process (``publisher_process.py``; on ``memory://``, which
is one process's bus, a second connection of this process instead).

Faults are injected one after another; after each, the runner waits until every worker has
received a message published after the backbone was ready again (or a cap), then the next. At the
end the publishers stop, what they sent is drained, the workers stop, and the history goes to
:func:`tests.campaign.history.check`. Every scenario adds one line to :data:`LINES`, which the
campaign's ``conftest.py`` prints at the end of the pytest run.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from opal_broadcast import BackboneUnavailable, Broadcast, SubscriptionGap
from tests.campaign.history import Fault, PublisherLog, Verdict, WorkerLog, check, describe

__all__ = [
    "LINES",
    "RUNS",
    "VARIANTS",
    "Scenario",
    "assert_passed",
    "count",
    "half_open",
    "run",
    "scenario_name",
]

#: One line per scenario run in this pytest session, printed by the conftest's summary hook.
LINES: list[str] = []

#: Messages per second, per publisher.
RATE = 20.0

_SCRIPT = Path(__file__).with_name("publisher_process.py")


def now() -> float:
    return time.monotonic()


def scale() -> float:
    """``OPAL_CAMPAIGN_SCALE`` (default 0.1): the share of the full counts the CI run makes."""
    return float(os.environ.get("OPAL_CAMPAIGN_SCALE", "0.1"))


def count(full: int, run_scale: float) -> int:
    """``full`` scaled, at least 1."""
    return max(1, math.ceil(full * run_scale))


#: How workers subscribe again after a gap or an error: at once, or 0.1 s later.
VARIANTS = [pytest.param(0.0, id="immediate"), pytest.param(0.1, id="wait-0.1s")]

#: The CI run (counts scaled by ``OPAL_CAMPAIGN_SCALE``) and the full counts (``-m slow``).
RUNS = [pytest.param(scale(), id="ci"), pytest.param(1.0, id="full", marks=pytest.mark.slow)]


def half_open(options: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """How long to hold a half-open link, and the :class:`Scenario` bounds that go with it.

    A gap within probe_interval + probe_timeout + 1 s; each failed publish within publish_timeout
    + 0.5 s; delivery back within one reconnect attempt (connect_timeout) plus the backoff and 1 s
    of passing traffic again: in a real black hole the attempt under way when traffic returns is
    lost (the test proxy holds and then forwards it, which is only faster).
    """
    bounds = {
        "gap_bound": options["probe_interval"] + options["probe_timeout"] + 1.0,
        "publish_fail_bound": options["publish_timeout"] + 0.5,
        "resume_bound": options["connect_timeout"] + options["reconnect_max_delay"] + 1.0,
    }
    return max(bounds["gap_bound"], bounds["publish_fail_bound"]) + 1.0, bounds


def scenario_name(backbone: str, fault: str, delay: float) -> str:
    return f"{backbone} {fault} " + ("immediate" if not delay else f"wait-{delay:g}s")


#: Injects fault number ``i`` (from 0) and returns it once the backbone is ready again.
Inject = Callable[[int], Awaitable[Fault]]


@dataclass
class Scenario:
    """One run of the campaign (see the module docstring)."""

    name: str
    url: str
    options: dict[str, Any]
    inject: Inject
    faults: int
    #: Whether each fault must be a gap for every worker (True), or for none (False).
    gap_expected: bool
    #: Every worker resumes within this many seconds of each fault's ``ready``.
    resume_bound: float
    #: The other publisher's URL (another process); None: a second connection in this process.
    process_url: str | None = None
    resubscribe_delay: float = 0.0
    #: Each worker's gap within this many seconds of the fault's start (None: not measured).
    gap_bound: float | None = None
    #: Publishes of this process started during the fault must fail typed, each within this
    #: many seconds (None: not checked).
    publish_fail_bound: float | None = None
    #: How long to wait after each fault for every worker to resume before the next fault.
    resume_cap: float = 15.0
    #: How long to wait for startup (connect, first messages) and for the final drain.
    startup_timeout: float = 30.0
    drain_timeout: float = 5.0
    pause: float = 0.3


@dataclass
class _Worker:
    log: WorkerLog
    #: Per publisher: the highest sequence number received, and the latest publish start seen.
    highest: dict[str, int] = field(default_factory=dict)
    latest_sent: float = -math.inf
    odd_subscribe_errors: list[str] = field(default_factory=list)
    longest_subscribe: float = 0.0


async def _work(broadcast: Broadcast, channel: str, worker: _Worker, delay: float) -> None:
    """Subscribe, read, and subscribe again whenever that ends, until cancelled."""
    log = worker.log
    while True:
        attempt = now()
        try:
            async with broadcast.subscribe(channel) as subscriber:
                log.live(now())
                worker.longest_subscribe = max(worker.longest_subscribe, now() - attempt)
                ended = False
                try:
                    async for event in subscriber:
                        at = now()
                        text = event.message
                        name, seq, started = (
                            text.decode() if isinstance(text, bytes) else text
                        ).split(" ")
                        log.received(name, int(seq), at)
                        worker.highest[name] = max(int(seq), worker.highest.get(name, 0))
                        worker.latest_sent = max(worker.latest_sent, float(started))
                except SubscriptionGap as gap:
                    ended = True
                    log.gap(now(), gap.gap.reason)
                except Exception as exc:
                    ended = True
                    log.error(now(), repr(exc))
                finally:
                    if not ended:
                        log.closed(now())
        except BackboneUnavailable as exc:
            log.subscribe_failed(now(), f"BackboneUnavailable: {exc}")
            worker.longest_subscribe = max(worker.longest_subscribe, now() - attempt)
        except Exception as exc:
            log.subscribe_failed(now(), repr(exc))
            worker.odd_subscribe_errors.append(repr(exc))
        if delay:
            await anyio.sleep(delay)
        else:
            await anyio.lowlevel.checkpoint()  # at once: only let the event loop run


async def _publish_stream(
    broadcast: Broadcast, channel: str, log: PublisherLog, stopping: anyio.Event
) -> None:
    """Publish ``"NAME SEQ STARTED"`` at :data:`RATE` until ``stopping``; errors are recorded."""
    interval = 1.0 / RATE
    seq = 0
    due = now()
    while not stopping.is_set():
        seq += 1
        started = now()
        try:
            await broadcast.publish(channel, f"{log.name} {seq} {started:.6f}")
        except BackboneUnavailable:
            log.record(seq, started, now(), ok=False, error="unavailable")
        except Exception as exc:
            log.record(seq, started, now(), ok=False, error=f"error:{type(exc).__name__}: {exc}")
        else:
            log.record(seq, started, now(), ok=True)
        due = max(due + interval, now())
        with anyio.move_on_after(due - now()):
            await stopping.wait()


class _ProcessPublisher:
    """``publisher_process.py`` in a child process; its records land in ``log`` as they come."""

    def __init__(self, url: str, channel: str, log: PublisherLog, options: dict[str, Any]) -> None:
        self.command = [sys.executable, str(_SCRIPT), url, channel, log.name, json.dumps(options)]
        self.log = log
        self.ready = anyio.Event()
        self.stderr = bytearray()
        self.process: anyio.abc.Process | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        process = await anyio.open_process(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.process = process
        task_status.started()
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._read_stderr, process)
                await self._read_stdout(process)
            await process.wait()
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await process.aclose()

    async def _read_stdout(self, process: anyio.abc.Process) -> None:
        assert process.stdout is not None
        lines = BufferedByteReceiveStream(process.stdout)
        while True:
            try:
                line = await lines.receive_until(b"\n", 1 << 16)
            except (anyio.EndOfStream, anyio.IncompleteRead):
                return
            if line == b"ready":
                self.ready.set()
                continue
            seq, started, finished, outcome = json.loads(line)
            ok = outcome == "ok"
            self.log.record(seq, started, finished, ok=ok, error=None if ok else outcome)

    async def _read_stderr(self, process: anyio.abc.Process) -> None:
        assert process.stderr is not None
        async for chunk in process.stderr:
            self.stderr.extend(chunk)

    async def stop(self, timeout: float) -> None:
        """Close its stdin (it stops publishing and disconnects) and wait for it to exit."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            await process.stdin.aclose()
        with anyio.move_on_after(timeout):
            await process.wait()
        if process.returncode is None:
            process.kill()

    def tail(self) -> str:
        return bytes(self.stderr[-3000:]).decode(errors="replace")


async def _until(predicate: Callable[[], bool], timeout: float) -> bool:
    with anyio.move_on_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)
        return True
    return False


@dataclass
class Result:
    """A scenario's outcome: the checker's verdict, every problem found (none: it passed), and
    notes on the run that explain a failure (per fault and per worker)."""

    verdict: Verdict
    problems: list[str]
    notes: list[str]


async def run(scenario: Scenario) -> Result:
    """Run ``scenario`` and check its history.

    The scenario's line is added to :data:`LINES` before returning.
    """
    channel = f"campaign-{uuid.uuid4().hex[:12]}"
    workers = [_Worker(WorkerLog(f"worker{i}")) for i in (1, 2)]
    local = PublisherLog("local")
    other = PublisherLog("process" if scenario.process_url is not None else "connection")
    faults: list[Fault] = []
    problems: list[str] = []
    began = now()
    stopping = anyio.Event()
    child: _ProcessPublisher | None = None
    options = scenario.options
    async with AsyncExitStack() as stack:
        broadcasts = [
            await stack.enter_async_context(Broadcast(scenario.url, **options)) for _ in workers
        ]
        publisher = await stack.enter_async_context(Broadcast(scenario.url, **options))
        second = None
        if scenario.process_url is None:
            second = await stack.enter_async_context(
                Broadcast(scenario.url, share_connection=False, **options)
            )
        async with anyio.create_task_group() as readers:
            for broadcast, worker in zip(broadcasts, workers, strict=True):
                readers.start_soon(_work, broadcast, channel, worker, scenario.resubscribe_delay)
            if not await _until(
                lambda: all(w.log.is_live for w in workers), scenario.startup_timeout
            ):
                raise AssertionError(f"{scenario.name}: the workers never subscribed")
            # The publishers' task group ends (every publish recorded) before the drain.
            async with anyio.create_task_group() as publishers:
                publishers.start_soon(_publish_stream, publisher, channel, local, stopping)
                if second is not None:
                    publishers.start_soon(_publish_stream, second, channel, other, stopping)
                else:
                    assert scenario.process_url is not None
                    child = _ProcessPublisher(scenario.process_url, channel, other, options)
                    await publishers.start(child.run)
                names = (local.name, other.name)
                if not await _until(
                    lambda: all(n in w.highest for w in workers for n in names),
                    scenario.startup_timeout,
                ):
                    tail = child.tail() if child is not None else ""
                    raise AssertionError(
                        f"{scenario.name}: the workers did not receive from both publishers "
                        f"within {scenario.startup_timeout:g} s. {tail}"
                    )
                for i in range(scenario.faults):
                    fault = await scenario.inject(i)
                    faults.append(fault)
                    await _until(
                        lambda ready=fault.ready: all(w.latest_sent >= ready for w in workers),
                        scenario.resume_cap,
                    )
                    await anyio.sleep(scenario.pause)
                stopping.set()
                if child is not None:
                    await child.stop(timeout=scenario.drain_timeout + 10)
            await _until(lambda: _drained(workers, (local, other)), scenario.drain_timeout)
            readers.cancel_scope.cancel()
    if child is not None and child.process is not None and child.process.returncode != 0:
        problems.append(
            f"the publisher process exited with {child.process.returncode}: {child.tail()}"
        )
    verdict = check([local, other], [w.log for w in workers], faults)
    problems.extend(verdict.problems)
    problems.extend(_expectations(scenario, verdict, faults, local, other, workers))
    line = verdict.line(scenario.name, len(faults))
    LINES.append(f"{'ok  ' if not problems else 'FAIL'} {line} [{now() - began:.0f}s]")
    result = Result(verdict, problems, _notes(faults, verdict, workers))
    if os.environ.get("OPAL_CAMPAIGN_NOTES"):
        LINES.extend(f"     {note}" for note in result.notes)
    return result


def _notes(faults: list[Fault], verdict: Verdict, workers: list[_Worker]) -> list[str]:
    notes = [
        f"{fault.name}: ready {fault.ready - fault.started:.2f} s after it began; resumed after "
        + ", ".join("never" if r is None else f"{r:.2f} s" for r in resumes)
        for fault, resumes in zip(faults, verdict.resumes, strict=True)
    ]
    for worker in workers:
        failures = worker.log.subscribe_failures()
        notes.append(
            f"{worker.log.name}: received {worker.log.received_count()}, "
            f"{len(worker.log.gaps())} gap(s), {len(failures)} subscribe() call(s) raised, the "
            f"longest subscribe() took {worker.longest_subscribe:.2f} s"
            + (f"; first error: {failures[0]}" if failures else "")
        )
    return notes


def _drained(workers: list[_Worker], publishers: tuple[PublisherLog, ...]) -> bool:
    """Every worker holds the last acknowledged message of each publisher it is owed."""
    for worker in workers:
        since = worker.log.live_since
        if since is None:
            return False
        for log in publishers:
            acked = [p for p in log.acked if p.started >= since]
            if acked and worker.highest.get(log.name, 0) < acked[-1].seq:
                return False
    return True


def _expectations(
    scenario: Scenario,
    verdict: Verdict,
    faults: list[Fault],
    local: PublisherLog,
    other: PublisherLog,
    workers: list[_Worker],
) -> list[str]:
    """The scenario's own promises, beyond the checker's rules."""
    problems: list[str] = []
    names = [w.log.name for w in workers]
    for fault, gaps, resumes in zip(faults, verdict.gaps_per_fault, verdict.resumes, strict=True):
        for name, seen, resume in zip(names, gaps, resumes, strict=True):
            if scenario.gap_expected and not seen:
                problems.append(f"{fault.name}: {name} saw no gap")
            if not scenario.gap_expected and seen:
                problems.append(f"{fault.name}: {name} saw {len(seen)} gap(s), expected none")
            if resume is None:
                problems.append(
                    f"{fault.name}: {name} received nothing published after the backbone was "
                    f"ready again (waited {scenario.resume_cap:g} s)"
                )
            elif resume > scenario.resume_bound:
                problems.append(
                    f"{fault.name}: {name} resumed {resume:.2f} s after the backbone was ready "
                    f"(bound {scenario.resume_bound:g} s)"
                )
            if scenario.gap_bound is not None and seen:
                late = seen[0] - fault.started
                if late > scenario.gap_bound:
                    problems.append(
                        f"{fault.name}: {name}'s gap came {late:.2f} s after the fault "
                        f"(bound {scenario.gap_bound:g} s)"
                    )
        if scenario.publish_fail_bound is not None:
            during = [p for p in local.publishes if fault.started <= p.started < fault.ready]
            failed = [p for p in during if not p.ok]
            if not failed:
                problems.append(f"{fault.name}: no publish of this process failed during it")
            slow = [p for p in failed if p.finished - p.started > scenario.publish_fail_bound]
            if slow:
                worst = max(p.finished - p.started for p in slow)
                problems.append(
                    f"{fault.name}: {len(slow)} publish(es) failed only after {worst:.2f} s "
                    f"(bound {scenario.publish_fail_bound:g} s)"
                )
    for log in (local, other):
        odd = [p.error for p in log.publishes if p.error is not None and p.error != "unavailable"]
        if odd:
            problems.append(f"{log.name} publisher: {len(odd)} untyped error(s), first: {odd[0]}")
    for worker in workers:
        if worker.odd_subscribe_errors:
            problems.append(
                f"{worker.log.name}: subscribe() raised untyped: {worker.odd_subscribe_errors[0]}"
            )
        bound = float(scenario.options.get("connect_timeout", 10.0)) + 1.0
        if worker.longest_subscribe > bound:
            problems.append(
                f"{worker.log.name}: a subscribe() took {worker.longest_subscribe:.2f} s "
                f"(connect_timeout + 1 s is {bound:g} s)"
            )
    return problems


def assert_passed(result: Result) -> None:
    """Fail the test with the problems and the notes (the scenario's line is in the summary)."""
    values = result.verdict.resume_values()
    resume = f"median {statistics.median(values):.2f} s" if values else "no resume"
    assert not result.problems, (
        f"{len(result.problems)} problem(s) ({resume}):\n"
        + describe(result.problems)
        + "\n-- notes --\n"
        + "\n".join(result.notes)
    )
