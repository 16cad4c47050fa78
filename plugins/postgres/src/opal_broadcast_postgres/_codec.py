"""Channel-name rules and the wire format that carries any message through NOTIFY payloads.

Postgres limits what one notification carries: the payload is text (no NUL byte) of at most 7,999
bytes, and identical (channel, payload) pairs in one transaction are folded into one. Messages
are therefore framed; the frame is chosen per message so that the common case, a small text
message, goes out unchanged. (A second copy of a payload in one transaction, when concurrent
publishes share a round trip, goes out as a one-fragment message: ``RS T <id>:1/1:<text>``.)

Wire format (for publishers and subscribers in other languages)
===============================================================

A payload that does not begin with U+001E (RS, "record separator") is a whole text message, as
is. This is what a plain ``NOTIFY``/``pg_notify`` sends, and what this plugin sends for text of at
most 7,999 UTF-8 bytes that has no NUL and does not itself begin with RS. Every other payload
starts with RS and a kind letter:

====  ====================  =================================================================
kind  delivered as          body
====  ====================  =================================================================
t     text                  the text itself (used to escape text that begins with RS)
u     text                  base64 of its UTF-8 bytes (text containing NUL)
r     bytes                 the bytes decoded as UTF-8 (bytes that are valid UTF-8 without NUL)
b     bytes                 base64 of the bytes (any other bytes)
====  ====================  =================================================================

``RS kind body`` is a whole message. A message whose frame would exceed 7,999 bytes is cut into
fragments: RS, the kind letter in upper case, a header, and a chunk of the body::

    RS KIND <id> ":" <index> "/" <count> ":" <chunk>        e.g.  "\\x1eT1f3:1/3:...."

``id`` is letters and digits (no colon), unique among the sender's messages in flight; ``index``
runs from 1 to ``count`` (decimal); the chunk starts after the second colon. The body is the concatenation of the chunks; a chunk of a ``T``/``R``
body is cut at a UTF-8 character boundary, a chunk of a ``U``/``B`` body anywhere. The fragments of
a message are sent in order, in one transaction (Postgres then delivers them together, in order,
or not at all); a receiver keys them by (channel, sending backend's pid, id), so the transactions
of concurrent publishers cannot mix them up. A receiver drops a message whose fragments arrive
incomplete or out of order.
"""

from __future__ import annotations

import binascii
import itertools
import logging
from collections import OrderedDict

from opal_broadcast import InvalidChannel, InvalidMessage, MessageTooLarge

__all__ = [
    "MARK",
    "MAX_CHANNEL_BYTES",
    "MAX_PAYLOAD_BYTES",
    "Encoder",
    "Reassembler",
    "check_channel",
]

logger = logging.getLogger("opal_broadcast.postgres")

MARK = "\x1e"
#: NOTIFY refuses payloads of 8000 bytes and more (BLCKSZ - NAMEDATALEN - 128 on a default build).
MAX_PAYLOAD_BYTES = 7999
#: Channel names are identifiers: NAMEDATALEN - 1 bytes.
MAX_CHANNEL_BYTES = 63
#: Body bytes per fragment: MAX_PAYLOAD_BYTES less room for the longest header (39 bytes).
CHUNK_BYTES = MAX_PAYLOAD_BYTES - 39
#: Most fragments of one message being reassembled per connection at once (oldest dropped first).
MAX_PARTIAL = 64

_SHORT = MAX_PAYLOAD_BYTES // 4  # text of at most this many characters fits, whatever they are


def check_channel(channel: str) -> None:
    """Raise :class:`InvalidChannel` unless Postgres can LISTEN and NOTIFY on ``channel`` exactly."""
    if channel.isascii() and 0 < len(channel) <= MAX_CHANNEL_BYTES and "\x00" not in channel:
        return
    if not channel:
        raise InvalidChannel("A Postgres channel name must not be empty.")
    if "\x00" in channel:
        raise InvalidChannel(f"The channel name {channel!r} contains a NUL character.")
    try:
        size = len(channel.encode())
    except UnicodeEncodeError:
        raise InvalidChannel(
            f"The channel name {channel!r} is not valid Unicode (a lone surrogate)."
        ) from None
    if size > MAX_CHANNEL_BYTES:
        raise InvalidChannel(
            f"The channel name {channel[:20]!r}... is {size} bytes in UTF-8; Postgres channel "
            f"names are limited to {MAX_CHANNEL_BYTES} bytes (LISTEN would silently truncate it "
            "and nothing would ever be delivered). Use a shorter name."
        )


class Encoder:
    """Turns one message into the payloads of its notifications (see the module docstring)."""

    __slots__ = ("_ids", "max_size", "unicode")

    def __init__(self, max_size: int, *, unicode: bool = True) -> None:
        #: The cap, in bytes (UTF-8 for text); larger messages raise :class:`MessageTooLarge`.
        self.max_size = max_size
        #: False when the server's encoding cannot hold every character: non-ASCII text is then
        #: sent in base64 (ASCII), so nothing depends on the server's conversion.
        self.unicode = unicode
        self._ids = itertools.count(1)

    def encode(self, message: str | bytes) -> list[str]:
        """The payloads for ``message``, to be sent in order in one transaction."""
        if isinstance(message, str):
            if (
                len(message) <= _SHORT
                and not message.startswith(MARK)
                and "\x00" not in message
                and (message.isascii() or (self.unicode and _is_unicode(message)))
            ):
                return [message]  # the common case: sent as is, no framing
            return self._encode_text(message)
        if isinstance(message, bytes):
            return self._encode_bytes(message)
        raise InvalidMessage(f"A message must be str or bytes, not {type(message).__name__}.")

    def unique(self, payload: str) -> str | None:
        """The whole-message ``payload`` as a 1-of-1 fragment with a fresh id, or None if too long.

        For a second copy of a payload in one transaction, which Postgres would fold into the first.
        """
        kind, body = (
            (payload[1].upper(), payload[2:]) if payload.startswith(MARK) else ("T", payload)
        )
        framed = f"{MARK}{kind}{next(self._ids):x}:1/1:{body}"
        if len(framed) <= _SHORT or len(framed.encode()) <= MAX_PAYLOAD_BYTES:
            return framed
        return None

    def _encode_text(self, text: str) -> list[str]:
        try:
            data = text.encode()
        except UnicodeEncodeError:
            raise InvalidMessage(
                "The message is not valid Unicode (it contains a lone surrogate); "
                "encode it first, or send bytes."
            ) from None
        self._check_size(len(data))
        if "\x00" in text or not (self.unicode or text.isascii()):
            return self._frame("u", _b64(data))
        if len(data) <= MAX_PAYLOAD_BYTES and not text.startswith(MARK):
            return [text]
        return self._frame("t", text, data)

    def _encode_bytes(self, data: bytes) -> list[str]:
        self._check_size(len(data))
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return self._frame("b", _b64(data))
        if "\x00" in text or not (self.unicode or data.isascii()):
            return self._frame("b", _b64(data))
        return self._frame("r", text, data)

    def _check_size(self, size: int) -> None:
        if size > self.max_size:
            raise MessageTooLarge(
                f"The message is {size} bytes; this postgres:// backbone carries at most "
                f"{self.max_size} (the max_message_size option). Nothing was sent."
            )

    def _frame(self, kind: str, body: str, data: bytes | None = None) -> list[str]:
        """``body`` framed as one payload, or as fragments. ``data``: its UTF-8 if not ASCII."""
        size = len(body) if data is None else len(data)
        if size + 2 <= MAX_PAYLOAD_BYTES:
            return [MARK + kind + body]
        chunks = _chunks(body) if data is None else _utf8_chunks(data)
        count = len(chunks)
        head = f"{MARK}{kind.upper()}{next(self._ids):x}:"
        return [f"{head}{i}/{count}:{chunk}" for i, chunk in enumerate(chunks, 1)]


def _is_unicode(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8 (no lone surrogate) within the payload limit."""
    try:
        return len(text.encode()) <= MAX_PAYLOAD_BYTES
    except UnicodeEncodeError:
        return False


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _chunks(ascii_body: str) -> list[str]:
    return [ascii_body[i : i + CHUNK_BYTES] for i in range(0, len(ascii_body), CHUNK_BYTES)]


def _utf8_chunks(data: bytes) -> list[str]:
    """Cut UTF-8 ``data`` into chunks of at most CHUNK_BYTES, each whole characters."""
    chunks = []
    start, end_of_data = 0, len(data)
    while start < end_of_data:
        end = min(start + CHUNK_BYTES, end_of_data)
        while end < end_of_data and data[end] & 0xC0 == 0x80:  # a continuation byte
            end -= 1
        chunks.append(data[start:end].decode())
        start = end
    return chunks


class _Partial:
    __slots__ = ("chunks", "count", "kind", "size")

    def __init__(self, kind: str, count: int) -> None:
        self.kind = kind
        self.count = count
        self.chunks: list[str] = []
        self.size = 0


class Reassembler:
    """Turns received payloads back into messages; one per listening connection."""

    __slots__ = ("_partial", "max_size")

    def __init__(self, max_size: int) -> None:
        #: Fragmented messages with bodies beyond this are dropped (a publisher with a larger cap).
        self.max_size = max_size * 4 // 3 + 4 * CHUNK_BYTES
        self._partial: OrderedDict[tuple[str, int, str], _Partial] = OrderedDict()

    def feed(self, channel: str, pid: int, payload: str) -> str | bytes | None:
        """The message ``payload`` (which begins with MARK) completes, or None."""
        kind = payload[1:2]
        if kind in ("t", "u", "r", "b"):
            return _decode(kind, payload[2:])
        if kind not in ("T", "U", "R", "B"):
            return payload  # not ours: a foreign payload that happens to begin with RS
        id_end = payload.find(":", 2)
        header_end = payload.find(":", id_end + 1) if id_end > 2 else -1
        index_text, _, count_text = payload[id_end + 1 : header_end].partition("/")
        if header_end < 0 or not (index_text.isdigit() and count_text.isdigit()):
            logger.warning("dropped a malformed fragment on channel %r", channel)
            return None
        ident, index, count = payload[2:id_end], int(index_text), int(count_text)
        if not 1 <= index <= count:
            logger.warning("dropped a malformed fragment on channel %r", channel)
            return None
        key = (channel, pid, ident)
        chunk = payload[header_end + 1 :]
        if index == 1:
            partial = self._partial[key] = _Partial(kind, count)
            if len(self._partial) > MAX_PARTIAL:
                self._partial.popitem(last=False)
        else:
            found = self._partial.get(key)
            if found is None or len(found.chunks) + 1 != index or found.count != count:
                self._partial.pop(key, None)
                logger.warning(
                    "dropped fragment %d/%d of message %s from backend %d on channel %r: "
                    "its earlier fragments were not received",
                    index,
                    count,
                    ident,
                    pid,
                    channel,
                )
                return None
            partial = found
        partial.chunks.append(chunk)
        partial.size += len(chunk)
        if partial.size > self.max_size:
            del self._partial[key]
            logger.warning(
                "dropped message %s from backend %d on channel %r: larger than this "
                "subscriber's max_message_size; give every process the same cap",
                ident,
                pid,
                channel,
            )
            return None
        if index < count:
            return None
        del self._partial[key]
        return _decode(kind.lower(), "".join(partial.chunks))


def _decode(kind: str, body: str) -> str | bytes | None:
    try:
        if kind == "t":
            return body
        if kind == "r":
            return body.encode()
        data = binascii.a2b_base64(body)
        return data.decode() if kind == "u" else data
    except (binascii.Error, UnicodeDecodeError):
        logger.warning("dropped a message with a malformed %r body", kind)
        return None
