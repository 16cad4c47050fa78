"""RESP2, the Redis wire format: encode commands, parse replies incrementally.

Only what the plugin's connections carry after the handshake: integers, simple strings, errors,
bulk strings and arrays (pub/sub pushes are arrays). The parser takes whatever the socket gave and
returns every complete reply, so a burst of messages costs one call, not one await per line as
redis-py's pure-Python parser does.
"""

from __future__ import annotations

import io
from typing import Any, TypeAlias, cast

__all__ = [
    "LONG",
    "ErrorReply",
    "Parser",
    "ProtocolError",
    "Reply",
    "command",
    "publish_command",
]

#: Bytes from which a reply cut short by a read is received for memory rather than speed: a
#: bulk string with one copy (:class:`Parser`), a reply with its buffer released before it is
#: delivered (:class:`~._hiredis.HiredisParser`).
LONG = 64 * 1024


class ErrorReply:
    """A ``-ERR ...`` reply, returned as a value (the caller decides what to raise)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    @property
    def code(self) -> str:
        """The first word: ``ERR``, ``NOAUTH``, ``WRONGPASS``, ``NOPERM``, ..."""
        return self.text.split(" ", 1)[0]

    def __repr__(self) -> str:
        return f"ErrorReply({self.text!r})"


Reply: TypeAlias = "bytes | int | ErrorReply | list[Reply] | None"


class ProtocolError(Exception):
    """The bytes received are not RESP2: the connection cannot be trusted any more."""


class _Incomplete(Exception):
    """Not all of the reply has arrived yet (internal).

    No args: a line is cut short. Else ``(end, header, start, length)``: a bulk string of
    ``length`` bytes whose ``$`` is at ``header`` and whose bytes start at ``start`` needs the
    buffer to reach ``end``.
    """


def command(*args: bytes) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


def publish_command(channel: bytes, payload: bytes) -> bytes:
    """``PUBLISH channel payload``, the hot path, in one formatting step."""
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        len(channel),
        channel,
        len(payload),
        payload,
    )


class Parser:
    """Feed it bytes as they arrive; it returns the replies completed so far, in order.

    Memory: a reply cut short by a read waits for the rest, its reads gathered and joined once.
    A bulk string of :data:`LONG` bytes or more is instead copied, read by read, into one
    ``io.BytesIO`` whose ``getvalue()`` then hands out that very buffer: a 100 MiB message costs
    about 100 MiB while it arrives (up to 1/8 more while the buffer grows), not its reads plus a
    joined copy plus a slice of that. Meanwhile an empty bulk string holds its place in the reply
    (a hole); when the reply is complete, the hole is filled with the bytes.
    """

    __slots__ = ("_buffer", "_chunks", "_holes", "_need", "_sink")

    def __init__(self) -> None:
        self._buffer = b""
        # A large reply arrives in many reads: gather them until it can be complete, instead
        # of re-joining the growing buffer on every read.
        self._chunks: list[bytes] = []
        self._need = 0
        #: The long bulk string being received, if any.
        self._sink: _Sink | None = None
        #: Long bulk strings received for the reply at the start of the buffer, and where they go.
        self._holes: list[tuple[list[int], bytes]] = []

    def feed(self, data: bytes) -> list[Reply]:
        """Add ``data``; return every reply it completes (possibly none)."""
        replies: list[Reply] = []
        if self._sink is not None or self._need:
            waited = self._wait(data)
            if waited is None:
                return replies
            data = waited
        buffer = self._buffer + data if self._buffer else data
        position = 0
        size = len(buffer)
        try:
            while position < size:
                reply, position = _parse(buffer, position)
                replies.append(reply)
        except _Incomplete as incomplete:
            missing = incomplete.args
            if missing and missing[3] >= LONG:
                return self._stream(buffer, position, missing, replies)
            if missing:
                self._need = missing[0] - size
        except ValueError as exc:  # a length or integer that is not a number
            raise ProtocolError(f"malformed RESP reply: {exc}") from None
        if self._holes and replies:
            replies[0] = _fill(replies[0], self._holes)
            self._holes = []
        self._buffer = buffer[position:] if position < size else b""
        if self._need:
            self._chunks.append(self._buffer)
            self._buffer = b""
        return replies

    def _wait(self, data: bytes) -> bytes | None:
        """What to parse: ``data`` after what waited for it; None while that still lacks bytes."""
        if self._sink is not None:
            rest = self._pour(data)
            if rest is None:
                return None
            data = rest
        return self._gather(data) if self._need else data

    def _gather(self, data: bytes) -> bytes | None:
        """Keep ``data`` until the reply cut short can be complete; then all of it, joined."""
        self._chunks.append(data)
        self._need -= len(data)
        if self._need > 0:
            return None
        self._need = 0
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data

    def _stream(
        self, buffer: bytes, position: int, missing: tuple[Any, ...], replies: list[Reply]
    ) -> list[Reply]:
        """Begin receiving the long bulk string ``missing`` describes (see :meth:`_pour`)."""
        if self._holes and replies:  # they belong to a reply that is now complete
            replies[0] = _fill(replies[0], self._holes)
            self._holes = []
        _end, header, start, length = missing
        prefix = buffer[position:header]
        self._sink = _Sink(prefix, _open_path(prefix), length)
        self._buffer = b""
        # What follows the bytes in the buffer is at most the first byte of their CRLF.
        rest = self._pour(memoryview(buffer)[start:])
        if rest:
            self._buffer += rest
        return replies

    def _pour(self, data: bytes | memoryview) -> bytes | None:
        """Copy ``data`` into the long bulk string; once it is whole, the bytes after it."""
        sink = self._sink
        assert sink is not None
        if len(data) < sink.missing:
            sink.file.write(data)
            sink.missing -= len(data)
            return None
        view = memoryview(data)
        sink.file.write(view[: sink.missing])
        rest = bytes(view[sink.missing :])
        self._sink = None
        # getvalue() returns the BytesIO's own buffer (trimmed in place), not a copy of it.
        self._holes.append((sink.path, sink.file.getvalue()))
        # The hole: an empty bulk string, whose CRLF is the one that follows the real one.
        self._buffer = sink.prefix + b"$0\r\n"
        return rest


class _Sink:
    """A long bulk string on its way: its bytes so far, how many are missing, where it goes."""

    __slots__ = ("file", "missing", "path", "prefix")

    def __init__(self, prefix: bytes, path: list[int], length: int) -> None:
        #: The reply up to the bulk string's ``$``.
        self.prefix = prefix
        #: Its index in each array around it, innermost first.
        self.path = path
        self.file = io.BytesIO()
        self.missing = length


def _fill(reply: Reply, holes: list[tuple[list[int], bytes]]) -> Reply:
    """``reply`` with each hole (an empty bulk string) replaced by its long bulk string."""
    for path, payload in holes:
        if not path:  # the reply is the bulk string
            reply = payload
            continue
        node = cast("list[Reply]", reply)
        for index in reversed(path[1:]):
            node = cast("list[Reply]", node[index])
        node[path[0]] = payload
    return reply


def _open_path(prefix: bytes) -> list[int]:
    """Where the element after ``prefix`` (the start of a reply) goes: its index in each array
    still open at the end of ``prefix``, innermost first."""
    open_arrays: list[list[int]] = []  # [index, count], outermost first
    position = 0
    while position < len(prefix):
        if prefix[position] == 42:  # * array
            end = prefix.find(b"\r\n", position)
            count = int(prefix[position + 1 : end])
            position = end + 2
            if count > 0:
                open_arrays.append([0, count])
                continue
        else:
            _, position = _parse(prefix, position)
        # An element is complete: the next goes after it, or after the arrays it completes.
        while open_arrays:
            open_arrays[-1][0] += 1
            if open_arrays[-1][0] < open_arrays[-1][1]:
                break
            open_arrays.pop()
    return [index for index, _count in reversed(open_arrays)]


def _parse(buffer: bytes, position: int) -> tuple[Reply, int]:
    end = buffer.find(b"\r\n", position)
    if end < 0:
        raise _Incomplete
    kind = buffer[position]
    if kind == 36:  # $ bulk string
        return _bulk(buffer, position, end)
    if kind == 42:  # * array
        count = int(buffer[position + 1 : end])
        if count < 0:
            return None, end + 2
        items: list[Reply] = []
        position = end + 2
        for _ in range(count):
            item, position = _parse(buffer, position)
            items.append(item)
        return items, position
    if kind == 58:  # : integer
        return int(buffer[position + 1 : end]), end + 2
    if kind == 43:  # + simple string
        return buffer[position + 1 : end], end + 2
    if kind == 45:  # - error
        return ErrorReply(buffer[position + 1 : end].decode("utf-8", "replace")), end + 2
    raise ProtocolError(f"unexpected RESP type byte {bytes([kind])!r}")


def _bulk(buffer: bytes, position: int, end: int) -> tuple[Reply, int]:
    length = int(buffer[position + 1 : end])
    if length < 0:
        return None, end + 2
    start = end + 2
    stop = start + length
    if stop + 2 > len(buffer):
        raise _Incomplete(stop + 2, position, start, length)
    if buffer[stop : stop + 2] != b"\r\n":
        raise ProtocolError(f"a bulk string of {length} bytes is not followed by CRLF")
    return buffer[start:stop], stop + 2
