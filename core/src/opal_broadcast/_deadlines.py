"""Deadlines without a cancel scope each: one timer per hub bounds every publish and subscribe.

An anyio cancel scope costs about as much as a loopback publish round trip's whole framework budget
(~11 us per ``fail_after`` on the CI machine, ~30 us when the scope spans a suspension), which shows
on the publish hot path and when thousands of subscriptions are entered at once. On asyncio, with
Python >= 3.11, one :class:`Deadlines` per hub keeps the expiry of each bounded task and one timer
for the earliest; the timer cancels expired tasks with a marker, and :meth:`Deadlines.timed_out`
takes that cancellation back (``uncancel``, as ``asyncio.timeout`` does), so a cancellation from
anyone else passes through untouched. Elsewhere callers use anyio's ``fail_after``.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio

__all__ = ["Deadlines"]

_EXPIRED = "opal_broadcast: deadline expired"
#: How early a timer may fire on the loop's clock (uvloop's is in whole milliseconds).
_GRANULARITY = 0.001


class Deadlines:
    """Bounds publishes and subscribes in time; one instance per hub (see the module docstring)."""

    __slots__ = ("_timer", "clock", "expired", "inflight", "loop", "native", "next_expiry")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """``loop``: the hub's asyncio event loop; None on another async library."""
        self.native = loop is not None and sys.version_info >= (3, 11)
        #: The event loop. Passing it to ``current_task`` matters: without it, CPython 3.11 finds
        #: the running loop with a ``getpid()`` system call (a fork check), which cost about 5% of
        #: a loopback publish round trip.
        self.loop = loop
        #: The loop's clock: ``loop.time``, or ``time.monotonic`` itself where that is all it
        #: does (asyncio's own loops), saving a Python call per publish.
        self.clock: Callable[[], float] = time.monotonic
        if loop is not None and type(loop).time is not asyncio.BaseEventLoop.time:
            self.clock = loop.time  # uvloop's cached clock, a test loop's virtual one
        #: The expiry (``clock()``) of each task's publish.
        self.inflight: dict[asyncio.Task[Any], float] = {}
        #: Tasks the timer cancelled and that have not yet seen it.
        self.expired: set[asyncio.Task[Any]] = set()
        #: When the timer fires (``clock()``); infinity when it is not set.
        self.next_expiry = math.inf
        self._timer: asyncio.TimerHandle | None = None

    def schedule(self, expiry: float) -> None:
        """Fire the timer at ``expiry`` (``clock()``) instead of later."""
        if self._timer is not None:
            self._timer.cancel()
        assert self.loop is not None, "native deadlines only"
        self._timer = self.loop.call_at(expiry, self._expire)
        self.next_expiry = expiry

    def timed_out(self, task: asyncio.Task[Any]) -> bool:
        """Whether the cancellation ``task`` received is its deadline's, and nobody else's."""
        return task in self.expired and task.uncancel() == 0  # type: ignore[attr-defined,unused-ignore]

    def _expire(self) -> None:
        self._timer = None
        self.next_expiry = math.inf
        # A timer may fire a little before its time on the loop's own clock (uvloop keeps time
        # in whole milliseconds): what expires within a millisecond expires now, or the timer
        # would fire again and again until the clock caught up.
        now = self.clock() + _GRANULARITY
        following = math.inf
        for task, expiry in self.inflight.items():
            if expiry <= now:
                if task not in self.expired:
                    self.expired.add(task)
                    task.cancel(_EXPIRED)
            elif expiry < following:
                following = expiry
        if following < math.inf:
            self.schedule(following)

    def bound(self, timeout: float) -> _Bound | Any:
        """``with deadlines.bound(timeout):`` raises ``TimeoutError`` when ``timeout`` passes, like
        anyio's ``fail_after`` (which it is, off asyncio or inside another bound of this task)."""
        task = asyncio.current_task(self.loop) if self.native else None
        if task is None or task in self.inflight:
            return anyio.fail_after(timeout)
        return _Bound(self, task, timeout)


class _Bound:
    __slots__ = ("deadlines", "task", "timeout")

    def __init__(self, deadlines: Deadlines, task: asyncio.Task[Any], timeout: float) -> None:
        self.deadlines, self.task, self.timeout = deadlines, task, timeout

    def __enter__(self) -> None:
        deadlines = self.deadlines
        deadlines.inflight[self.task] = expiry = deadlines.clock() + self.timeout
        if expiry < deadlines.next_expiry:
            deadlines.schedule(expiry)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        deadlines, task = self.deadlines, self.task
        del deadlines.inflight[task]
        if not deadlines.expired:
            return
        expired = exc_type is asyncio.CancelledError and deadlines.timed_out(task)
        deadlines.expired.discard(task)
        if expired:
            raise TimeoutError from None
