"""The fault campaign's one history checker: what was published, what each worker saw, the verdict.

Every scenario on every backbone records the same two kinds of history and hands them to
:func:`check`:

- per publisher, each publish: its sequence number, when the call started and ended, and whether
  it was acknowledged (returned) or failed (raised);
- per worker, in order: each subscription becoming live (``subscribe()`` returned), each message
  received, and how the subscription ended: at a gap (``SubscriptionGap``), by another error, or
  closed by the test; and each ``subscribe()`` that raised.

The rules, for every worker:

- **No duplicates**: no message is received twice, in one subscription or across them.
- **Order**: each publisher's messages arrive in the order they were published.
- **No silent loss**: a message is *owed* to a subscription when it was acknowledged and its
  publish started after that subscription was live (and before it ended). An owed message the
  worker never received must lie inside a window in which the worker saw a gap: the subscription
  ended with a gap, and nothing the same publisher sent later arrived in that subscription
  before it (a hole with later messages delivered is a loss no gap explains). Anything else
  missed is a *silent loss*. A failed publish is owed to no one, and may arrive.

It also measures, per fault and worker, the *resume time*: from the moment the backbone was
ready again (the restart helper returned, the kill was done, the proxy passed traffic again)
until the worker received the first message whose publish started at or after that moment.

All times are ``time.monotonic()`` seconds. On Linux that clock (CLOCK_MONOTONIC) is system-wide,
so a publisher in another process records times comparable with this process's.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Fault",
    "PublisherLog",
    "Verdict",
    "WorkerLog",
    "check",
]

EndKind = Literal["gap", "error", "closed"]


@dataclass(frozen=True)
class Publish:
    """One publish call: ``ok`` when it returned (acknowledged), else ``error`` says what it raised."""

    publisher: str
    seq: int
    started: float
    finished: float
    ok: bool
    error: str | None = None


class PublisherLog:
    """Everything one publisher published, in order (sequence numbers increase by one)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.publishes: list[Publish] = []

    def record(
        self, seq: int, started: float, finished: float, *, ok: bool, error: str | None = None
    ) -> Publish:
        publish = Publish(self.name, seq, started, finished, ok, error)
        self.publishes.append(publish)
        return publish

    @property
    def acked(self) -> list[Publish]:
        return [p for p in self.publishes if p.ok]

    @property
    def failed(self) -> list[Publish]:
        return [p for p in self.publishes if not p.ok]


@dataclass(frozen=True)
class _Live:
    at: float


@dataclass(frozen=True)
class _Received:
    publisher: str
    seq: int
    at: float


@dataclass(frozen=True)
class _Ended:
    at: float
    kind: EndKind
    detail: str


@dataclass(frozen=True)
class _SubscribeFailed:
    at: float
    error: str


_Entry = _Live | _Received | _Ended | _SubscribeFailed


class WorkerLog:
    """One worker's history, appended to as it happens (the checker reads it afterwards)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.entries: list[_Entry] = []

    def live(self, at: float) -> None:
        """``subscribe()`` returned: the subscription is live from ``at`` on."""
        self.entries.append(_Live(at))

    def received(self, publisher: str, seq: int, at: float) -> None:
        self.entries.append(_Received(publisher, seq, at))

    def gap(self, at: float, reason: str = "") -> None:
        """The iteration ended with ``SubscriptionGap`` at ``at``."""
        self.entries.append(_Ended(at, "gap", reason))

    def error(self, at: float, error: str) -> None:
        """The iteration raised something other than ``SubscriptionGap``."""
        self.entries.append(_Ended(at, "error", error))

    def closed(self, at: float) -> None:
        """The test ended the subscription (no loss is excused by this)."""
        self.entries.append(_Ended(at, "closed", ""))

    def subscribe_failed(self, at: float, error: str) -> None:
        """``subscribe()`` raised: no subscription was made."""
        self.entries.append(_SubscribeFailed(at, error))

    # -- read by the harness while the scenario runs ------------------------------------------

    @property
    def is_live(self) -> bool:
        """Whether the last subscription is live and has not ended."""
        for entry in reversed(self.entries):
            if isinstance(entry, _Live):
                return True
            if isinstance(entry, (_Ended, _SubscribeFailed)):
                return False
        return False

    @property
    def live_since(self) -> float | None:
        """When the current subscription became live (None when there is none)."""
        for entry in reversed(self.entries):
            if isinstance(entry, _Live):
                return entry.at
            if isinstance(entry, (_Ended, _SubscribeFailed)):
                return None
        return None

    def gaps(self) -> list[float]:
        return [e.at for e in self.entries if isinstance(e, _Ended) and e.kind == "gap"]

    def subscribe_failures(self) -> list[str]:
        return [e.error for e in self.entries if isinstance(e, _SubscribeFailed)]

    def received_count(self) -> int:
        return sum(1 for e in self.entries if isinstance(e, _Received))


@dataclass(frozen=True)
class Fault:
    """One injected fault: it ``started`` (the stop, kill or freeze began) and the backbone was
    ``ready`` again (the restart helper returned, the kill was done, the link passed again)."""

    name: str
    started: float
    ready: float


@dataclass
class Subscription:
    """A worker's subscription as the checker rebuilt it from the log."""

    worker: str
    live: float
    end: float
    kind: EndKind
    detail: str
    received: list[_Received] = field(default_factory=list)


@dataclass
class Verdict:
    """What :func:`check` found. ``problems`` is empty when every rule held."""

    workers: int
    published: int
    failed_publishes: int
    received: int
    gaps: int
    lost_with_gap: int
    silent: list[str]
    duplicates: list[str]
    disorder: list[str]
    phantoms: list[str]
    errors: list[str]
    #: Per fault, per worker (in the order of ``workers``): seconds, or None when the worker had
    #: received nothing published after ``ready`` before the next fault (or the end).
    resumes: list[list[float | None]]
    #: Per fault, per worker: the times of the gaps the worker saw from the fault's start until the
    #: next fault's start.
    gaps_per_fault: list[list[list[float]]]

    @property
    def problems(self) -> list[str]:
        return [
            *(f"silent loss: {s}" for s in self.silent),
            *(f"duplicate: {d}" for d in self.duplicates),
            *(f"out of order: {d}" for d in self.disorder),
            *(f"never published: {p}" for p in self.phantoms),
            *(f"iteration error: {e}" for e in self.errors),
        ]

    def resume_values(self) -> list[float]:
        return [r for per_fault in self.resumes for r in per_fault if r is not None]

    def unresumed(self) -> int:
        return sum(1 for per_fault in self.resumes for r in per_fault if r is None)

    def line(self, scenario: str, faults: int) -> str:
        """The scenario's one summary line."""
        values = self.resume_values()
        never = self.unresumed()
        if values:
            median = f"{statistics.median(values):.2f}s"
            worst = f"{max(values):.2f}s"
        else:
            median = worst = "-"
        if never:
            worst = f"never({never})"
        extra = ""
        other = len(self.duplicates) + len(self.disorder) + len(self.phantoms) + len(self.errors)
        if other:
            extra = (
                f" dup={len(self.duplicates)} disorder={len(self.disorder)}"
                f" phantom={len(self.phantoms)} errors={len(self.errors)}"
            )
        return (
            f"{scenario}: faults={faults} gaps={self.gaps} lost-with-gap={self.lost_with_gap} "
            f"silent={len(self.silent)} resume median={median} worst={worst} "
            f"(published={self.published} failed={self.failed_publishes} "
            f"received={self.received}{extra})"
        )


def subscriptions(log: WorkerLog, end_of_history: float) -> tuple[list[Subscription], list[str]]:
    """Rebuild ``log``'s subscriptions; the second list names entries that make no sense."""
    result: list[Subscription] = []
    errors: list[str] = []
    current: Subscription | None = None
    for entry in log.entries:
        if isinstance(entry, _Live):
            if current is not None:
                errors.append(f"{log.name}: live again at {entry.at:.3f} without an end")
                current.end, current.kind = entry.at, "closed"
            current = Subscription(log.name, entry.at, end_of_history, "closed", "")
            result.append(current)
        elif isinstance(entry, _Received):
            if current is None:
                errors.append(f"{log.name}: received {entry.publisher}#{entry.seq} unsubscribed")
            else:
                current.received.append(entry)
        elif isinstance(entry, _Ended):
            if current is None:
                errors.append(f"{log.name}: an end ({entry.kind}) at {entry.at:.3f} unsubscribed")
                continue
            current.end, current.kind, current.detail = entry.at, entry.kind, entry.detail
            current = None
        elif current is not None:
            errors.append(f"{log.name}: subscribe() failed at {entry.at:.3f} while subscribed")
    return result, errors


def check(
    publishers: Sequence[PublisherLog],
    workers: Sequence[WorkerLog],
    faults: Sequence[Fault] = (),
) -> Verdict:
    """Apply the rules of the module docstring; see :class:`Verdict`."""
    publishes = {(p.publisher, p.seq): p for log in publishers for p in log.publishes}
    acked = sorted((p for p in publishes.values() if p.ok), key=lambda p: p.started)
    horizon = max(
        [p.finished for p in publishes.values()]
        + [e.at for w in workers for e in w.entries]
        + [0.0]
    )
    silent: list[str] = []
    duplicates: list[str] = []
    disorder: list[str] = []
    phantoms: list[str] = []
    errors: list[str] = []
    lost_with_gap = 0
    gaps = 0
    for worker in workers:
        subs, malformed = subscriptions(worker, horizon)
        errors.extend(malformed)
        gaps += sum(1 for s in subs if s.kind == "gap")
        errors.extend(
            f"{worker.name}: iteration raised {s.detail} at {s.end:.3f}"
            for s in subs
            if s.kind == "error"
        )
        everything = [r for s in subs for r in s.received]
        counts = Counter((r.publisher, r.seq) for r in everything)
        duplicates.extend(
            f"{worker.name} received {pub}#{seq} {n} times"
            for (pub, seq), n in sorted(counts.items())
            if n > 1
        )
        phantoms.extend(
            f"{worker.name} received {pub}#{seq}"
            for (pub, seq) in counts
            if (pub, seq) not in publishes
        )
        highest: dict[str, int] = {}
        for r in everything:
            before = highest.get(r.publisher)
            if before is None or r.seq > before:
                highest[r.publisher] = r.seq
            elif counts[(r.publisher, r.seq)] == 1:  # a duplicate is reported as one
                disorder.append(f"{worker.name} received {r.publisher}#{r.seq} after #{before}")
        for sub in subs:
            # Per publisher, the highest sequence number this subscription received, and when.
            latest: dict[str, int] = {}
            for r in sub.received:
                latest[r.publisher] = max(r.seq, latest.get(r.publisher, r.seq))
            for p in acked:
                if p.started < sub.live or p.started > sub.end:
                    continue
                if (p.publisher, p.seq) in counts:
                    continue
                hole = latest.get(p.publisher, -1) > p.seq
                if sub.kind == "gap" and not hole:
                    lost_with_gap += 1
                    continue
                why = (
                    f"later messages of {p.publisher} arrived before the gap"
                    if hole and sub.kind == "gap"
                    else f"the subscription ended {sub.kind}"
                    + (f" ({sub.detail})" if sub.detail else "")
                    + (f", after later messages of {p.publisher}" if hole else "")
                )
                silent.append(
                    f"{worker.name} missed {p.publisher}#{p.seq} (published {p.started:.3f}, "
                    f"subscription live {sub.live:.3f}-{sub.end:.3f}; {why})"
                )
    resumes, gaps_per_fault = _per_fault(workers, faults, horizon, publishes)
    return Verdict(
        workers=len(workers),
        published=len(publishes),
        failed_publishes=sum(1 for p in publishes.values() if not p.ok),
        received=sum(w.received_count() for w in workers),
        gaps=gaps,
        lost_with_gap=lost_with_gap,
        silent=silent,
        duplicates=duplicates,
        disorder=disorder,
        phantoms=sorted(phantoms),
        errors=errors,
        resumes=resumes,
        gaps_per_fault=gaps_per_fault,
    )


def _per_fault(
    workers: Sequence[WorkerLog],
    faults: Sequence[Fault],
    horizon: float,
    publishes: dict[tuple[str, int], Publish],
) -> tuple[list[list[float | None]], list[list[list[float]]]]:
    ordered = sorted(faults, key=lambda f: f.started)
    resumes: list[list[float | None]] = []
    gaps: list[list[list[float]]] = []
    for i, fault in enumerate(ordered):
        until = ordered[i + 1].started if i + 1 < len(ordered) else horizon
        resumes.append([resume_time(w, fault.ready, until, publishes) for w in workers])
        gaps.append([[t for t in w.gaps() if fault.started <= t < until] for w in workers])
    return resumes, gaps


def resume_time(
    worker: WorkerLog,
    ready: float,
    until: float,
    publishes: dict[tuple[str, int], Publish],
) -> float | None:
    """Seconds from ``ready`` to the first message ``worker`` received (before ``until``) whose
    publish started at or after ``ready``; None if there was none."""
    for entry in worker.entries:
        if not isinstance(entry, _Received) or entry.at < ready:
            continue
        if entry.at >= until:
            return None
        publish = publishes.get((entry.publisher, entry.seq))
        if publish is not None and publish.started >= ready:
            return entry.at - ready
    return None


def describe(problems: Iterable[str], limit: int = 15) -> str:
    """The first ``limit`` problems, one a line, and how many more there were."""
    items = list(problems)
    text = "\n".join(items[:limit])
    if len(items) > limit:
        text += f"\n... and {len(items) - limit} more"
    return text
