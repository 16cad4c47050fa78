"""The model tests' event loop on a virtual clock (tests/core/_virtual_clock.py)."""

import asyncio
import time

import anyio
import pytest

from tests.core._virtual_clock import Deadlock, Hang, Livelock, VirtualClockLoop


@pytest.fixture
def loop():
    loop = VirtualClockLoop()
    yield loop
    loop.close()


def test_an_hour_of_sleep_takes_no_wall_time(loop):
    """The clock jumps to the next timer: a one-hour sleep ends at once, one hour later."""
    started = time.monotonic()
    loop.run_until_complete(asyncio.sleep(3600))
    assert loop.time() == 3600
    assert time.monotonic() - started < 1


def test_timers_fire_in_order_at_their_virtual_times(loop):
    """Each timer sees the clock at its own due time, in due order."""
    fired: list[tuple[str, float]] = []
    for name, delay in [("c", 0.3), ("a", 0.1), ("b", 0.2)]:
        loop.call_later(delay, lambda name=name: fired.append((name, loop.time())))
    loop.run_until_complete(asyncio.sleep(1))
    assert fired == [("a", 0.1), ("b", 0.2), ("c", 0.3)]


def test_advance_runs_what_is_due_and_stops_there(loop):
    """advance() runs the timers due within the interval, no later one, and ends on time."""
    fired: list[str] = []
    loop.call_later(0.5, fired.append, "early")
    loop.call_later(1.5, fired.append, "late")
    loop.advance(1.0)
    assert (fired, loop.time()) == (["early"], 1.0)
    loop.advance(1.0)
    assert (fired, loop.time()) == (["early", "late"], 2.0)


def test_advance_runs_what_a_timer_due_at_its_end_wakes(loop):
    """A task whose sleep ends exactly at the end of the interval has finished when advance returns."""

    async def sleeper() -> float:
        await asyncio.sleep(1.0)
        await asyncio.sleep(0)
        return loop.time()

    task = loop.create_task(sleeper())
    loop.advance(1.0)
    assert task.done() and task.result() == 1.0


def test_advance_with_nothing_to_do_just_moves_the_clock(loop):
    """An empty loop is not a deadlock while it is told how far to go."""
    loop.advance(2.5)
    assert loop.time() == 2.5


def test_run_until_idle_leaves_the_clock_alone(loop):
    """run_until_idle() runs what is ready and what that wakes, but no timer in the future."""
    ran: list[str] = []
    loop.call_soon(lambda: loop.call_soon(ran.append, "woken"))
    loop.call_later(0.1, ran.append, "timer")
    loop.run_until_idle()
    assert (ran, loop.time()) == (["woken"], 0.0)


def test_run_once_runs_one_batch(loop):
    """run_once() runs the callbacks ready now; those they schedule wait for the next call."""
    ran: list[str] = []
    loop.call_soon(lambda: (ran.append("first"), loop.call_soon(ran.append, "second")))
    loop.run_once()
    assert ran == ["first"]
    loop.run_once()
    assert ran == ["first", "second"]


def test_a_wait_for_nothing_is_a_deadlock(loop):
    """Waiting for a future nobody will set, with no timer pending, raises instead of hanging."""
    with pytest.raises(Deadlock, match="no timer is pending"):
        loop.run_until_complete(loop.create_future())


def test_anyio_deadlines_run_on_the_virtual_clock(loop):
    """anyio's fail_after fires at its virtual deadline, however long the sleep it bounds."""

    async def bounded() -> None:
        with anyio.fail_after(5):
            await anyio.sleep(3600)

    with pytest.raises(TimeoutError):
        loop.run_until_complete(bounded())
    assert loop.time() == 5


def test_tasks_that_wake_each_other_for_ever_are_a_livelock():
    """Callbacks that keep the loop busy at one virtual time raise instead of spinning for ever."""
    loop = VirtualClockLoop(max_steps_per_instant=1000)

    async def spin() -> None:
        while True:
            await asyncio.sleep(0)

    task = loop.create_task(spin())
    try:
        with pytest.raises(Livelock, match="1000 loop iterations at virtual time 0"):
            loop.run_until_idle()
    finally:
        task.cancel()
        loop.run_until_idle()
        loop.close()


def test_a_task_that_never_awaits_is_a_hang():
    """A callback that keeps the loop for hang_after seconds of CPU time is interrupted."""
    loop = VirtualClockLoop(hang_after=0.2)

    async def busy() -> None:
        while True:
            pass

    try:
        with pytest.raises(Hang, match=r"(?s)0\.2 s of CPU time.*in busy"):
            loop.run_until_complete(busy())
    finally:
        loop.close()
