"""One local subscriber: a bounded queue the shared reader fills without ever waiting.

The queue is bounded twice (:class:`QueueBound`): in messages and in bytes of payload (``len()`` of
each message: its bytes, or the characters of text, which is its size for ASCII text and at most a
quarter of it otherwise; ``len()`` because ``sys.getsizeof`` costs 160 ns a message on this path),
so a stalled subscriber holds little whatever the message sizes. A message is always taken into an empty queue, whatever its size (the backbone's
own ``max_message_size`` bounds that).

Overflow policy: when either bound is reached, new messages for this subscriber are dropped and
counted (the others are unaffected). A default subscriber then ends with
:class:`SubscriberOverflow` naming the count once it has read what was queued. A subscriber that
opted in to keep going receives a :class:`Gap` marker with the count instead, then new messages.

At any gap (overflow, or the backbone's): a default subscriber ends after what it has queued; a
``keep_going`` one gets a :class:`Gap` marker in-band; one whose ``Broadcast`` has
``gap_policy="continue"`` carries on without a marker (the hub logs and counts backbone gaps; an
overflow is logged here, as one line with its count).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import anyio

from ._errors import NotConnectedError, SubscriberOverflow, SubscriptionGap
from ._events import Event, Gap

if TYPE_CHECKING:
    from ._telemetry import Telemetry

__all__ = ["MeasuredSubscriber", "QueueBound", "Subscriber"]

logger = logging.getLogger("opal_broadcast")

_T = TypeVar("_T", Event, "Event | Gap")


@dataclass(frozen=True, slots=True)
class QueueBound:
    """How much one subscriber's queue may hold: ``messages``, and ``bytes`` of payload."""

    messages: int
    bytes: int

    def describe(self) -> str:
        return f"{self.messages} messages or {self.bytes} bytes"


class Subscriber(Generic[_T]):
    """An async iterator of :class:`Event` from one channel (the value of ``b.subscribe()``).

    Iterate it with ``async for event in subscriber`` or call ``await subscriber.get()``. At a gap
    (backbone lost, or this subscriber fell behind) a default subscriber raises
    :class:`SubscriptionGap` after the messages received before it; ``gap`` then says what
    happened. With ``keep_going=True`` it yields :class:`Gap` markers in-band and continues.
    """

    __slots__ = (
        "_closed",
        "_detach",
        "_items",
        "_loop",
        "_missed",
        "_queued_bytes",
        "_waiter",
        "bound",
        "channel",
        "continues",
        "gap",
        "keep_going",
        "telemetry",
    )

    def __init__(
        self,
        channel: str,
        *,
        bound: QueueBound,
        keep_going: bool,
        detach: Callable[[Subscriber[_T]], None],
        loop: asyncio.AbstractEventLoop | None = None,
        continues: bool = False,
    ) -> None:
        self.channel = channel
        self.bound = bound
        self.keep_going = keep_going
        #: Carry on across gaps without a marker (``gap_policy="continue"``).
        self.continues = continues and not keep_going
        #: The gap that ended this subscription (default mode), or ``None``.
        self.gap: Gap | None = None
        self._items: deque[Event | Gap] | None = None  # made on first use: idle costs little
        self._missed = 0
        self._queued_bytes = 0
        self._closed = False
        # What a waiting get() awaits: a future of ``loop`` on asyncio (an anyio.Event would
        # cost two getpid() system calls per wait on CPython 3.11), an anyio.Event otherwise.
        self._loop = loop
        self._waiter: asyncio.Future[None] | anyio.Event | None = None
        self._detach: Callable[[Subscriber[_T]], None] = detach
        #: The hub's telemetry (counts dropped messages), or None.
        self.telemetry: Telemetry | None = None

    # Called by the hub, synchronously, from the backbone's reader. Never blocks.
    def offer(self, event: Event, size: int) -> None:
        """Queue ``event`` (``size``: its message's bytes), or count it as missed when full."""
        items = self._items
        if items is None:
            items = self._items = deque()
        elif self._missed or (
            items
            and (len(items) >= self.bound.messages or self._queued_bytes + size > self.bound.bytes)
        ):
            # Drop until the queue has been read empty, so the count stays exact.
            self._missed += 1
            if self.telemetry is not None:
                self.telemetry.dropped(self.channel)
            return
        items.append(event)
        self._queued_bytes += size
        self._wake()

    @property
    def queued(self) -> int:
        """How many items wait in the queue."""
        return len(self._items or ())

    def offer_gap(self, gap: Gap) -> None:
        """Queue a gap marker (always accepted: a gap must never be dropped)."""
        if self.continues:
            return  # the hub has logged and counted it
        if not self.keep_going:
            self._detach(self)
        if self._items is None:
            self._items = deque()
        self._items.append(gap)
        self._wake()

    def close(self) -> None:
        """End the iteration once queued events are read (its ``Broadcast`` disconnected)."""
        self._detach(self)
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is None:
            return
        self._waiter = None
        if isinstance(waiter, asyncio.Future):
            if not waiter.done():  # done: its task was cancelled, and has not yet seen it
                waiter.set_result(None)
        else:
            waiter.set()

    async def get(self) -> _T:
        """The next event; a :class:`Gap` only when ``keep_going`` is set.

        Raises :class:`SubscriptionGap` (or :class:`SubscriberOverflow`) at a gap otherwise, and
        :class:`NotConnectedError` once the ``Broadcast`` has disconnected and the queue is read.
        Cancelling a waiting ``get()`` loses nothing.
        """
        while True:
            if self.gap is not None:
                raise _error_for(self.gap)
            if self._items:
                item = self._items.popleft()
                if isinstance(item, Gap):
                    if not self.keep_going:
                        self.gap = item
                        continue
                else:
                    self._queued_bytes -= len(item.message)
                return item  # type: ignore[return-value]  # an Event, or a Gap when keep_going
            if self._missed:
                missed, self._missed = self._missed, 0
                gap = Gap(
                    self.channel,
                    f"this subscriber fell behind: its queue of {self.bound.describe()} was full",
                    missed,
                )
                if self.continues:
                    logger.warning(
                        "a subscriber of %r fell behind: %d message(s) dropped (%s); "
                        "it continues (gap_policy=continue)",
                        self.channel,
                        missed,
                        gap.reason,
                    )
                    continue
                if not self.keep_going:
                    self._detach(self)
                    self.gap = gap
                    continue
                return cast("_T", gap)
            if self._closed:
                raise NotConnectedError(
                    f"The subscription to {self.channel!r} ended: its Broadcast disconnected."
                )
            if self._waiter is not None:
                raise RuntimeError(
                    f"Another task is already waiting on this subscriber of {self.channel!r}: "
                    "one subscriber is read by one task (give each task its own subscribe())."
                )
            loop = self._loop
            waiter = self._waiter = loop.create_future() if loop is not None else anyio.Event()
            try:
                if isinstance(waiter, asyncio.Future):
                    await waiter
                else:
                    await waiter.wait()
            finally:
                if self._waiter is waiter:  # not woken: cancelled
                    self._waiter = None

    def __aiter__(self) -> Subscriber[_T]:
        return self

    async def __anext__(self) -> _T:
        try:
            return await self.get()
        except NotConnectedError:
            if self._closed:
                raise StopAsyncIteration from None
            raise

    def __repr__(self) -> str:
        return f"<Subscriber channel={self.channel!r} queued={len(self._items or ())}>"


class MeasuredSubscriber(Subscriber[_T]):
    """A subscriber whose hub has telemetry: the time between handing out a message and the next
    ``get()`` is the subscriber's processing time (``messaging.process.duration``)."""

    __slots__ = ("_handed_at", "_span")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handed_at: float | None = None
        self._span: Any = None

    async def get(self) -> _T:
        telemetry = self.telemetry
        if self._handed_at is not None and telemetry is not None:
            telemetry.processed(self.channel, time.perf_counter() - self._handed_at, self._span)
            self._handed_at = self._span = None
        item = await super().get()
        if telemetry is not None and not isinstance(item, Gap):
            self._span = telemetry.processing(self.channel)
            self._handed_at = time.perf_counter()
        return item  # type: ignore[return-value]  # mypy binds super()'s _T to one constraint


def _error_for(gap: Gap) -> SubscriptionGap:
    return SubscriberOverflow(gap) if gap.missed is not None else SubscriptionGap(gap)
