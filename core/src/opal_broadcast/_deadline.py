"""Deadlines for the publish hot path on asyncio, cheaper than a cancel scope per call.

On asyncio an anyio cancel scope costs about as much as a loopback publish round trip's whole
framework budget (measured: ~11 us per ``fail_after`` on the CI machine), and on that path every
Python call shows (each is ~1% of a loopback round trip). One timer per hub watches every
in-flight publish, whatever its timeout. ``Broadcast.publish`` does the bookkeeping inline::

    task = asyncio.current_task(deadlines.loop)  # not current_task(): see Deadlines.loop
    if task in deadlines.inflight: ...        # a publish inside a publish: use fail_after
    deadlines.inflight[task] = expiry = deadlines.clock() + timeout
    if expiry < deadlines.next_expiry:
        deadlines.schedule(expiry)
    try:
        await call()
    except asyncio.CancelledError:
        if deadlines.timed_out(task): ...     # this deadline's cancellation, and nobody else's
        raise
    finally:
        del deadlines.inflight[task]
        if deadlines.expired:
            deadlines.expired.discard(task)

The timer cancels expired tasks with a marker, and :meth:`Deadlines.timed_out` takes that
cancellation back (``uncancel``, as ``asyncio.timeout`` does). Only on asyncio with Python >= 3.11:
elsewhere :attr:`Deadlines.native` is false and the caller uses anyio's ``fail_after``.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Deadlines"]

_EXPIRED = "opal_broadcast: deadline expired"


class Deadlines:
    """Bounds publishes in time; one instance per hub (see the module docstring)."""

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
        now = self.clock()
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
