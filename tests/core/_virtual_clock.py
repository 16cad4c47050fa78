"""An asyncio event loop on a virtual clock: time jumps to the next timer whenever nothing is ready.

Timeouts, backoffs and probe intervals then cost no wall time and cannot flake on a loaded
machine, because nothing runs "late": a timer fires exactly at its virtual time, after everything
that was ready before it. anyio's ``sleep``/``fail_after`` and the core's publish deadlines all
read ``loop.time()``, so they run on this clock too.

The loop polls its selector without waiting; where it would have waited, it moves the clock to
the next timer instead. (Wake-ups from other threads are not waited for: code under this clock
must not use threads.) A loop that cannot make progress raises instead of hanging:

- :class:`Deadlock`: nothing is ready and no timer is pending, so no task can ever run again;
- :class:`Livelock`: callbacks keep running but the clock never moves (``max_steps_per_instant``
  loop iterations at one virtual time: tasks that wake each other for ever);
- :class:`Hang`: one call driving the loop has used ``hang_after`` seconds of CPU time (a task
  spinning without ever awaiting never returns to the loop). Measured in CPU time (``SIGPROF``),
  so a loaded machine that runs this process slowly is no hang; only in the main thread on Unix.
  The alarm then interrupts whatever runs every 10 ms of CPU until the loop returns, so that
  several spinning tasks end too. The loop's tasks are then in no shape to go on: close it.

Besides ``run_until_complete``, the loop can be driven step by step from synchronous code::

    loop = VirtualClockLoop()
    task = loop.create_task(work())
    loop.run_until_idle()   # run what is ready and what it wakes; the clock does not move
    loop.advance(0.5)       # run everything due in the next 0.5 s, then stop there
    loop.run_once()         # one batch of the callbacks ready now (what they wake waits)
"""

from __future__ import annotations

import asyncio
import selectors
import signal
import threading
import traceback
import warnings
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

__all__ = ["Deadlock", "Hang", "Livelock", "Stuck", "VirtualClockLoop"]

_T = TypeVar("_T")


class Stuck(RuntimeError):
    """The event loop cannot make progress."""


class Deadlock(Stuck):
    """Nothing is ready to run and no timer is pending: what the loop waits for cannot happen."""


class Livelock(Stuck):
    """Callbacks keep running at one virtual time: the clock never gets to move."""


class Hang(Stuck):
    """A call driving the loop used too much CPU time: a task that never awaits."""


class _Interrupt(BaseException):
    """Raised by the hang alarm inside the stuck callback (a BaseException: not caught as an error)."""


class _PollingSelector(selectors.DefaultSelector):
    """Never blocks: ``select`` polls, then tells the loop whether it would have waited."""

    def __init__(self, on_select: Callable[[float | None, bool], None]) -> None:
        super().__init__()
        self._on_select = on_select

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        ready: list[tuple[Any, int]] = super().select(0)
        self._on_select(timeout, bool(ready))
        return ready


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` is virtual (see the module docstring)."""

    def __init__(
        self,
        start: float = 0.0,
        *,
        max_steps_per_instant: int = 200_000,
        hang_after: float | None = None,
    ) -> None:
        self._now = start
        #: Where an idle loop stops instead of moving the clock further (None: it never stops).
        self._until: float | None = None
        self._max_steps = max_steps_per_instant
        self._steps = 0
        self._hang_after = hang_after
        self._hung_at: str | None = None
        self._guarding = False
        super().__init__(_PollingSelector(self._on_select))

    def time(self) -> float:
        return self._now

    def run_until_idle(self) -> None:
        """Run what is ready, and what that wakes, until every task waits; the clock stays."""
        self._guarded(self._run_until, self._now)

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` ahead, running every timer due on the way, then run until idle."""
        if seconds < 0:
            raise ValueError(f"the clock cannot go back ({seconds} s)")
        self._guarded(self._run_until, self._now + seconds)

    def run_once(self) -> None:
        """Run the callbacks ready now, once; what they make ready waits for the next step."""
        self.call_soon(self.stop)
        self._guarded(self.run_forever)

    def run_until_complete(self, future: Generator[Any, None, _T] | Awaitable[_T]) -> _T:
        run: Callable[[Generator[Any, None, _T] | Awaitable[_T]], _T] = super().run_until_complete
        return self._guarded(run, future)

    def _run_until(self, until: float) -> None:
        self._until = until
        try:
            self.run_forever()
            # Timers due at ``until`` ran in the loop's last step; what they woke runs now.
            while self._ready:  # type: ignore[attr-defined]
                self.run_forever()
        finally:
            self._until = None

    def _on_select(self, timeout: float | None, events: bool) -> None:
        """Called once per loop iteration, after polling; ``timeout`` is what it would wait."""
        if events or (timeout is not None and timeout <= 0):
            self._steps += 1
            if self._steps > self._max_steps:
                self._steps = 0
                raise Livelock(
                    f"Livelock: {self._max_steps} loop iterations at virtual time {self._now:g} "
                    "s without the clock moving. Some tasks keep waking each other."
                )
            return
        self._steps = 0
        until = self._until
        if until is not None and (timeout is None or self._now + timeout >= until):
            self._now = max(self._now, until)
            self.stop()
        elif timeout is None:
            raise Deadlock(
                "Deadlock: no callback is ready and no timer is pending, so no task can ever "
                "run again. Some task waits for an event nobody will set."
            )
        else:
            self._now += timeout

    def _guarded(self, run: Callable[..., _T], *args: Any) -> _T:
        """``run(*args)``, raising :class:`Hang` if it uses ``hang_after`` s of CPU time."""
        if (
            self._hang_after is None
            or not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()
        ):
            return run(*args)
        self._hung_at = None
        self._guarding = True
        previous = signal.signal(signal.SIGPROF, self._alarm)
        signal.setitimer(signal.ITIMER_PROF, self._hang_after)
        try:
            with warnings.catch_warnings():  # the alarm may add a filter (see _alarm)
                result = run(*args)
        except _Interrupt:
            pass
        finally:
            self._guarding = False  # first: an alarm from here on interrupts nothing
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, previous)
        # The interrupt may also have ended the stuck task only (asyncio keeps a task's error).
        if self._hung_at is not None:
            raise Hang(
                f"Hang: the loop used {self._hang_after:g} s of CPU time at virtual time "
                f"{self._now:g} s without getting back (a task that never awaits). "
                f"It was here:\n{self._hung_at}"
            )
        return result

    def _alarm(self, signum: int, frame: Any) -> None:
        if not self._guarding:
            return
        if self._hung_at is None:
            self._hung_at = "".join(traceback.format_stack(frame)[-12:])
            # From now on, interrupt whatever runs until the loop is back in _guarded.
            signal.setitimer(signal.ITIMER_PROF, 0.01, 0.01)
            # Interrupted calls leave coroutines never awaited: the hang is the report.
            warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
        raise _Interrupt
