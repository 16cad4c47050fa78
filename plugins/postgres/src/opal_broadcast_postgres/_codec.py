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

``id`` is 1 to 32 ASCII letters and digits, unique among the sender's messages in flight;
``index`` runs from 1 to ``count``, both ASCII decimal without leading zeros (at most 9 digits);
the chunk starts after the second colon and is never empty. The body is the concatenation of the
chunks; a chunk of a ``T``/``R`` body is cut at a UTF-8 character boundary, a chunk of a
``U``/``B`` body anywhere. Base64 is the standard alphabet with ``=`` padding, as Python's
``binascii.b2a_base64`` writes it.

The fragments of a message are sent in order, in one transaction. Postgres writes a
transaction's notifications into its queue together (one writer at a time) and each listening
session reads them in queue order, so they reach a receiver one after the other, from one backend
pid, with no other notification between them. A receiver relies on exactly that
(:mod:`._reassembly`): a message's fragments must arrive consecutively, on one channel, from one
backend, with one id, numbered 1, 2, ... ``count``; anything else between them ends the message
and it is dropped, as are duplicated and orphan fragments and malformed headers or bodies. A
receiver drops a message whose body exceeds its own ``max_message_size``: give every process the
same cap.
"""

from __future__ import annotations

import binascii
import itertools

from opal_broadcast import InvalidChannel, InvalidMessage, MessageTooLarge

__all__ = [
    "MARK",
    "MAX_CHANNEL_BYTES",
    "MAX_PAYLOAD_BYTES",
    "Encoder",
    "check_channel",
]

MARK = "\x1e"
#: NOTIFY refuses payloads of 8000 bytes and more (BLCKSZ - NAMEDATALEN - 128 on a default build).
MAX_PAYLOAD_BYTES = 7999
#: Channel names are identifiers: NAMEDATALEN - 1 bytes.
MAX_CHANNEL_BYTES = 63
#: Body bytes per fragment: MAX_PAYLOAD_BYTES less room for the longest header (39 bytes).
CHUNK_BYTES = MAX_PAYLOAD_BYTES - 39

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
