"""One Redis connection after its handshake: requests pipelined in order, replies matched in order.

A :class:`Wire` is the asyncio protocol of the connection's transport, so the event loop hands it
the bytes as they arrive: there is no reader task to cancel, and no read is ever abandoned midway
(cancelling a blocking redis-py read can leave its connection unusable, redis/redis-py#2665).
A request is a future queued behind the ones before it; cancelling the caller only cancels its
future, and the reply is read and dropped when it comes, so the connection stays in step.

A request made while nothing is in flight is written at once, so a lone publisher pays no extra
loop pass; requests made while others are in flight are gathered and leave in one write at the
end of the loop pass (a PUBLISH from each of 50 tasks is one ``send``). Pub/sub ``message`` pushes go to ``on_message``; every other
reply answers the oldest request. The first failure (EOF, reset, a reply nobody asked for) breaks
the wire for good: every waiting request fails with ``BackboneUnavailable`` (it may or may not have
been carried out), the wire is no longer ``writable``, and ``on_lost`` is told once. Nothing
reconnects here: the connection opens a new publishing wire, and the core replaces a lost pub/sub
wire and reports the gap.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from opal_broadcast import BackboneUnavailable

from ._hiredis import new_parser
from ._resp import ErrorReply, ProtocolError, Reply

__all__ = ["Wire"]

_MESSAGE = b"message"


class Wire(asyncio.Protocol):
    """The protocol of one connection's transport; see the module docstring."""

    def __init__(
        self,
        label: str,
        on_lost: Callable[[str], None],
        on_message: Callable[[bytes, bytes], None] | None = None,
    ) -> None:
        self.label = label
        #: Why the wire broke, once it has.
        self.broken: str | None = None
        self._on_lost = on_lost
        self._on_message = on_message
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = new_parser()
        self._waiting: deque[asyncio.Future[Reply]] = deque()
        self._outgoing: list[bytes] = []
        self._flush_pending = False
        #: False while the transport's send buffer is above its high-water mark, and for good
        #: once the wire broke: a publisher checks this one attribute before each request.
        self.writable = True
        self._writable: list[asyncio.Future[None]] = []
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport

    # -- requests ---------------------------------------------------------------------------

    def request(self, data: bytes, replies: int = 1) -> asyncio.Future[Reply]:
        """Send one encoded command; the future resolves to its reply (an ``ErrorReply`` too).

        ``replies``: how many replies the command gets when it succeeds (``SUBSCRIBE a b c``
        gets one per channel); the future resolves with the first, and an error reply
        answers the whole command.
        """
        if self.broken is not None:
            raise BackboneUnavailable(f"the {self.label} is lost: {self.broken}")
        future: asyncio.Future[Reply] = self._loop.create_future()
        if replies == 1:
            self._waiting.append(future)
        else:
            self._waiting.extend([future] * replies)
        if self._outgoing or len(self._waiting) > replies:
            self._outgoing.append(data)
            if not self._flush_pending:
                self._flush_pending = True
                self._loop.call_soon(self._flush)
        else:
            assert self._transport is not None
            self._transport.write(data)
        return future

    async def wait_writable(self) -> None:
        """Wait until the send buffer has drained below its low-water mark (or the wire broke)."""
        if not self.writable and self.broken is None:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._writable.append(waiter)
            await waiter

    def _flush(self) -> None:
        self._flush_pending = False
        if self._outgoing and self.broken is None:
            assert self._transport is not None
            data = b"".join(self._outgoing)
            self._outgoing.clear()
            self._transport.write(data)

    # -- protocol callbacks -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except ProtocolError as exc:
            self._lose(f"protocol error: {exc}")
            return
        on_message = self._on_message
        waiting = self._waiting
        for reply in replies:
            if on_message is not None and type(reply) is list and reply and reply[0] == _MESSAGE:
                on_message(reply[1], reply[2])  # type: ignore[arg-type]
            elif waiting:
                future = waiting.popleft()
                if not future.done():  # done only if its caller was cancelled
                    future.set_result(reply)
                if type(reply) is ErrorReply:  # it answers the whole command
                    while waiting and waiting[0] is future:
                        waiting.popleft()
            else:
                self._lose(f"unexpected reply {reply!r:.80}")
                return

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self._lose("Redis closed the connection")
        else:
            self._lose(f"{type(exc).__name__}: {exc}")

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = self.broken is None
        self._wake_writers()

    # -- ending -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close on purpose: no loss is reported. Pending requests fail."""
        self._closing = True
        transport = self._transport
        if transport is not None and not transport.is_closing():
            # abort, not close: a frozen peer would keep a graceful close (and TLS's
            # close_notify) waiting with unsent bytes; nothing sent after the last reply matters.
            transport.abort()
        self._lose("the connection was closed")

    def _lose(self, reason: str) -> None:
        if self.broken is not None:
            return
        self.broken = reason
        self.writable = False
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.abort()
        error = BackboneUnavailable(
            f"the {self.label} is lost ({reason}); "
            "a command in flight may or may not have been carried out"
        )
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: a cancelled caller must not log it at GC
        self._outgoing.clear()
        self._wake_writers()
        if not self._closing:
            self._on_lost(reason)

    def _wake_writers(self) -> None:
        for waiter in self._writable:
            if not waiter.done():
                waiter.set_result(None)
        self._writable.clear()
