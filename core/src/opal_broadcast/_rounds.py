"""Group commit for channel (un)subscribes: calls that arrive together go in one plugin call.

Ten thousand ``subscribe()`` calls entered at once would otherwise make ten thousand plugin calls,
each a round trip (or a lock hand-over inside the plugin); in rounds they make one (sent in chunks
of the plugin's batch size). A round's first caller leads it: it waits for the round under way, if
any, lets the callers of the same event-loop turn join (one checkpoint, when nothing was under way),
then closes the round and sends it. The others wait for the round to end, each woken once.

A round's outcome is per channel: ``send`` returns the exceptions of the channels it could not
handle, and each caller gets its own. A leader cancelled before sending hands the round to one of
the others; cancelled while sending, it ends the round for the others with nothing to report, and
their callers, finding their channel not live, go again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

import anyio.lowlevel

__all__ = ["Rounds"]

_T = TypeVar("_T")


class _Event(Protocol):
    def set(self) -> None: ...

    def wait(self) -> Awaitable[object]: ...


class _Round(Generic[_T]):
    __slots__ = ("failures", "finished", "items", "led", "wake")

    def __init__(self, wake: _Event) -> None:
        self.items: dict[str, _T] = {}
        #: Set when the round ends, or when its leader leaves before sending it.
        self.wake = wake
        self.led = False
        self.finished = False
        self.failures: dict[str, Exception] = {}


class Rounds(Generic[_T]):
    """One queue of rounds. ``send(items)`` handles a round's items (channel name -> entry) and
    returns the exceptions of those it could not handle."""

    __slots__ = ("_new_event", "_next", "_running", "_send")

    def __init__(
        self,
        send: Callable[[list[tuple[str, _T]]], Awaitable[dict[str, Exception]]],
        new_event: Callable[[], _Event],
    ) -> None:
        self._send = send
        self._new_event = new_event
        self._next: _Round[_T] = _Round(new_event())
        self._running: _Round[_T] | None = None

    async def join(self, channel: str, item: _T) -> None:
        """Return once a round that carried ``channel`` has ended; raise what it raised for it."""
        mine = self._next
        mine.items[channel] = item
        while not mine.finished:
            if mine.led:
                await mine.wake.wait()
            else:
                await self._lead(mine)
        failure = mine.failures.get(channel)
        if failure is not None:
            raise failure

    async def _lead(self, mine: _Round[_T]) -> None:
        mine.led = True
        try:
            if self._running is None:
                await anyio.lowlevel.checkpoint()  # let this loop turn's callers join
            while self._running is not None:
                await self._running.wake.wait()
        except BaseException:  # hand the round over: wake the others, one of them leads it
            mine.led = False
            wake, mine.wake = mine.wake, self._new_event()
            wake.set()
            raise
        self._next, self._running = _Round(self._new_event()), mine
        try:
            mine.failures = await self._send(list(mine.items.items()))
        finally:
            self._running = None
            mine.finished = True
            mine.wake.set()
