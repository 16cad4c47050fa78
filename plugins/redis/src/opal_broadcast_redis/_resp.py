"""RESP2, the Redis wire format: encode commands, parse replies incrementally.

Only what the plugin's connections carry after the handshake: integers, simple strings, errors,
bulk strings and arrays (pub/sub pushes are arrays). The parser takes whatever the socket gave and
returns every complete reply, so a burst of messages costs one call, not one await per line as
redis-py's pure-Python parser does.
"""

from __future__ import annotations

from typing import TypeAlias

__all__ = ["ErrorReply", "Parser", "ProtocolError", "Reply", "command", "publish_command"]


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
    """Not all of the reply has arrived yet (internal)."""


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
    """Feed it bytes as they arrive; it returns the replies completed so far, in order."""

    __slots__ = ("_buffer", "_chunks", "_need")

    def __init__(self) -> None:
        self._buffer = b""
        # A large reply arrives in many reads: gather them until it can be complete, instead
        # of re-joining the growing buffer on every read.
        self._chunks: list[bytes] = []
        self._need = 0

    def feed(self, data: bytes) -> list[Reply]:
        """Add ``data``; return every reply it completes (possibly none)."""
        if self._need:
            self._chunks.append(data)
            self._need -= len(data)
            if self._need > 0:
                return []
            self._need = 0
            data = b"".join(self._chunks)
            self._chunks.clear()
        buffer = self._buffer + data if self._buffer else data
        replies: list[Reply] = []
        position = 0
        size = len(buffer)
        try:
            while position < size:
                reply, position = _parse(buffer, position)
                replies.append(reply)
        except _Incomplete as missing:
            if missing.args:
                self._need = missing.args[0] - size
        except ValueError as exc:  # a length or integer that is not a number
            raise ProtocolError(f"malformed RESP reply: {exc}") from None
        self._buffer = buffer[position:] if position < size else b""
        if self._need:
            self._chunks.append(self._buffer)
            self._buffer = b""
        return replies


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
        raise _Incomplete(stop + 2)
    if buffer[stop : stop + 2] != b"\r\n":
        raise ProtocolError(f"a bulk string of {length} bytes is not followed by CRLF")
    return buffer[start:stop], stop + 2
