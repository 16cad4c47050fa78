"""Publishing: a few dedicated connections ("lanes"), round trips coalesced under load.

An awaited publisher on an idle lane sends its notification at once, in its own task: one round
trip of a prepared ``SELECT pg_notify($1, $2)``, as fast as raw asyncpg. When every lane is busy,
publishes queue up; the next lane to finish sends everything queued in one statement (one round
trip, one transaction) and more lanes are opened on demand, up to ``pool_size``. Under load many
publishes then share a round trip instead of each waiting for its own.

Order: a queue is sent first in, first out, and an awaited publish returns only once its
transaction committed, so one publisher's messages are delivered in publish order. A batch never
holds the same (channel, payload) twice as such, since Postgres would fold the pair into one
notification: a repeat is tagged with a message id (see ``_codec``) or, if too long to tag,
waits for the next round trip.

Not asyncpg's pool: it runs ``UNLISTEN *``/``RESET ALL`` on release and costs more per acquire
than a whole loopback round trip's budget.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from opal_broadcast import BackboneUnavailable

from ._codec import Encoder
from ._connect import close_quietly, import_asyncpg, open_connection
from ._options import PostgresConfig

__all__ = ["Publisher"]

SINGLE = "SELECT pg_notify($1, $2)"
#: unnest() yields the arrays' elements in order, and count() consumes the rows in that order.
MANY = "SELECT count(pg_notify(c, p)) FROM unnest($1::text[], $2::text[]) AS t(c, p)"
#: At most this much payload text (characters) in one coalesced round trip, unless one message is
#: larger by itself.
BATCH_CHARS = 512 * 1024


class _Lane:
    """One publishing connection with its prepared statements."""

    __slots__ = ("connection", "many", "notify", "single")

    def __init__(self, connection: Any, single: Any) -> None:
        self.connection = connection
        self.single = single
        #: ``notify(channel, payload)``: one notification, one round trip. Public API: calling
        #: asyncpg's protocol ``bind_execute`` instead, as this plugin once did, saves 4% per
        #: publish (bench/bench_postgres_internals.py, median of 15 paired rounds, asyncpg
        #: 0.32: 0.99x raw instead of 0.95x), less than an internal is worth.
        self.notify = single.fetchval
        self.many: Any = None

    async def send(self, channels: list[str], payloads: list[str]) -> None:
        if len(payloads) == 1:
            await self.notify(channels[0], payloads[0])
            return
        if self.many is None:
            self.many = await self.connection.prepare(MANY, name="opal_broadcast_notify_many")
        await self.many.fetchval(channels, payloads)


class _Item:
    __slots__ = ("batch", "channel", "future", "payloads", "size")

    def __init__(self, channel: str, payloads: list[str], future: asyncio.Future[None]) -> None:
        self.channel = channel
        self.payloads = payloads
        self.future = future
        self.size = sum(map(len, payloads))
        self.batch: _Batch | None = None


class _Batch:
    """Queued publishes sent in one round trip; abandoned once none of them is awaited."""

    __slots__ = ("channels", "done", "items", "payloads", "task", "waiting")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.items: list[_Item] = []
        self.channels: list[str] = []
        self.payloads: list[str] = []
        self.task = task
        self.waiting = 0
        self.done = False


class Publisher:
    """Publishes for one backbone connection; see the module docstring."""

    def __init__(self, config: PostgresConfig, encoder: Encoder) -> None:
        self._config = config
        self._encode = encoder.encode
        self._unique = encoder.unique
        self._size = config.pool_size
        self._idle: list[_Lane] = []
        self._lanes: set[_Lane] = set()
        self._opening = 0
        self._queue: deque[_Item] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # Kept, not looked up: CPython 3.11 finds the running loop with a getpid() system call.
        self._loop = asyncio.get_running_loop()

    async def publish(self, channel: str, message: str | bytes) -> None:
        """Send ``message`` (encoded first: typed errors before any I/O) in one transaction.

        Returns once it committed. This is the publish hook's whole hot path: the core calls it
        directly, and every Python call here costs about 1% of a loopback round trip.
        """
        payloads = self._encode(message)
        # An idle lane, nothing queued: send now. (A lane whose session closed has left the idle
        # list, through asyncpg's termination listener.)
        if not self._queue and self._idle:
            lane = self._idle.pop()
            try:
                if len(payloads) == 1:
                    await lane.notify(channel, payloads[0])
                else:
                    await lane.send([channel] * len(payloads), payloads)
            except BaseException as exc:
                error = self._failed(lane, exc)
                if lane in self._lanes:  # refused by the server, the session is fine
                    self._release(lane)
                if not isinstance(exc, Exception):
                    raise  # a cancellation (the core's deadline): the core reports it
                raise error from exc
            self._release(lane)
            return
        await self._queued(channel, payloads)

    async def _queued(self, channel: str, payloads: list[str]) -> None:
        """Every lane busy: wait in the queue, to go in the next batch a lane sends."""
        if self._closed:
            raise BackboneUnavailable(f"The connection to {self._config.url} is closed.")
        item = _Item(channel, payloads, self._loop.create_future())
        self._queue.append(item)
        self._grow()
        try:
            await item.future
        except asyncio.CancelledError:
            batch = item.batch
            if batch is None:
                with contextlib.suppress(ValueError):
                    self._queue.remove(item)
            elif not batch.done:
                batch.waiting -= 1
                if batch.waiting == 0 and batch.task is not None:
                    batch.task.cancel()  # nobody waits for this round trip: drop its lane
            raise

    async def close(self, *, graceful: bool) -> None:
        """Close every lane; fail what is queued. ``graceful``: say goodbye to the server first."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        self._fail_queued("the connection was closed")
        idle, self._idle = self._idle, []
        lanes, self._lanes = self._lanes, set()
        for lane in lanes:
            if not graceful or lane not in idle:
                lane.connection.terminate()
        closing = (
            [close_quietly(lane.connection) for lane in idle if lane in lanes] if graceful else []
        )
        await asyncio.gather(*tasks, *closing, return_exceptions=True)

    # -- lanes ------------------------------------------------------------------------------

    def _grow(self) -> None:
        """Open one more lane if publishes wait, none is idle, and the pool has room."""
        if (
            self._queue
            and not self._idle
            and not self._closed
            and len(self._lanes) + self._opening < self._size
        ):
            self._opening += 1
            self._spawn(self._open_and_drain())

    async def _open_and_drain(self) -> None:
        try:
            connection = await asyncio.wait_for(
                open_connection(self._config, "publish", statement_cache_size=0),
                self._config.connect_timeout,
            )
            try:
                single = await connection.prepare(SINGLE, name="opal_broadcast_notify")
                lane = _Lane(connection, single)
                connection.add_termination_listener(lambda _: self._forget(lane))
                if connection.is_closed():  # too late for the listener to hear of it
                    raise ConnectionError("the session closed as it opened")
            except BaseException:
                connection.terminate()
                raise
        except BaseException as exc:
            self._opening -= 1
            if not self._lanes and not self._opening:
                # Nothing else will serve the queue: fail it now rather than at the deadline.
                self._fail_queued(f"no publishing session could be opened ({exc!r})")
            if isinstance(exc, Exception):
                return
            raise
        self._opening -= 1
        if self._closed:
            connection.terminate()
            return
        self._lanes.add(lane)
        await self._drain(lane)

    async def _drain(self, lane: _Lane) -> None:
        """Send what is queued on ``lane``, batch after batch, then leave it idle."""
        while self._queue:
            batch = self._take()
            try:
                await lane.send(batch.channels, batch.payloads)
            except BaseException as exc:
                batch.done = True
                error = self._failed(lane, exc)
                for item in batch.items:
                    if not item.future.done():
                        item.future.set_exception(BackboneUnavailable(*error.args))
                if lane not in self._lanes:  # the lane is gone: another one serves the rest
                    self._grow()
                    return
                continue
            batch.done = True
            for item in batch.items:
                if not item.future.done():
                    item.future.set_result(None)
        if not self._closed:
            self._idle.append(lane)

    def _take(self) -> _Batch:
        """The queue's head, as much of it as one round trip carries (at least one message)."""
        queue = self._queue
        batch = _Batch(asyncio.current_task(self._loop))
        seen: set[tuple[str, str]] = set()
        size = 0
        while queue:
            item = queue[0]
            if batch.items and size + item.size > BATCH_CHARS:
                break
            if len(item.payloads) == 1:
                key = (item.channel, item.payloads[0])
                if key in seen:  # Postgres would fold the repeat into one notification
                    framed = self._unique(item.payloads[0])
                    if framed is None:
                        break  # too long to tag: it waits for the next round trip
                    item.payloads = [framed]
                else:
                    seen.add(key)
            queue.popleft()
            item.batch = batch
            batch.items.append(item)
            batch.channels.extend([item.channel] * len(item.payloads))
            batch.payloads.extend(item.payloads)
            size += item.size
        batch.waiting = len(batch.items)
        return batch

    def _release(self, lane: _Lane) -> None:
        """``lane`` is free again: it serves the queue, or waits in the idle list."""
        if self._queue:
            self._spawn(self._drain(lane))
        elif not self._closed:
            self._idle.append(lane)

    def _forget(self, lane: _Lane) -> None:
        """``lane``'s connection closed (asyncpg's termination listener): never use it again."""
        self._lanes.discard(lane)
        with contextlib.suppress(ValueError):
            self._idle.remove(lane)

    def _failed(self, lane: _Lane, exc: BaseException) -> BackboneUnavailable:
        """Drop ``lane`` unless ``exc`` left it usable; the error for the publishes it carried."""
        asyncpg = import_asyncpg()
        usable = isinstance(exc, asyncpg.PostgresError) and not isinstance(
            exc, asyncpg.PostgresConnectionError
        )
        if not usable:
            # Interrupted mid-round-trip (a deadline, a cancel) or broken: its state is unknown.
            self._lanes.discard(lane)
            lane.connection.terminate()
        url = self._config.url
        if not isinstance(exc, Exception):
            return BackboneUnavailable(
                f"Publishing to {url} was interrupted (cancelled, or the connection closed); "
                "the message may or may not have been sent."
            )
        what = "publishing was refused by" if usable else "publishing failed on"
        return BackboneUnavailable(url.redact(f"{what} {url}: {type(exc).__name__}: {exc}"))

    def _fail_queued(self, reason: str) -> None:
        queue, self._queue = self._queue, deque()
        url = self._config.url
        for item in queue:
            if not item.future.done():
                item.future.set_exception(
                    BackboneUnavailable(url.redact(f"Could not publish to {url}: {reason}"))
                )

    def _spawn(self, coroutine: Any) -> None:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
