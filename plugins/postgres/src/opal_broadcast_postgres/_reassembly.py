"""Received payloads back into messages, strictly: what arrives from the backbone is untrusted.

Any client that can connect can NOTIFY on any channel, so a payload may be anything a client can
write. The wire format is in ``_codec``'s docstring; this is the receiving side, which must cost
one dropped message per bad payload and never more: no exception, no log line per payload, no
memory beyond its bound, and no harm to other channels.

* **At most one partial message.** A transaction's notifications reach a listening session
  consecutively, from one backend (see ``_codec``), so a message's fragments arrive one after the
  other. Whatever else arrives between them ends the partial message, which is dropped.
* **Bounded in bytes.** A partial message holds its body as UTF-8 bytes (one ``bytearray``); a
  body that would exceed ``max_message_size`` (its base64 form, for kinds ``U``/``B``) is dropped
  as soon as it does (its remaining fragments are then counted off, not held), so
  ``max_message_size`` means the same bytes as the publisher's.
* **Bounded in age.** A partial message whose next fragment has not come by the time a round trip
  on the session returns will never complete: the server sends a transaction's notifications
  before it answers a later query. :meth:`Reassembler.expire` drops it, called after each liveness
  probe (``probe_interval``, 5 s by default) with a grace second (PostgreSQL may deliver the tail
  of a transaction on a second wake-up of the listening backend, a moment later).

What is dropped is reported through ``reject(channel, reason)`` (the core counts it per channel and
logs one line per channel and interval): malformed headers and bodies, orphan, duplicated,
interleaved and expired fragments. None of these can come from this plugin's publisher, which
sends every fragment of a message in one transaction, in order. One drop is reported through
``gap(channel, reason)`` instead: a message larger than this subscriber's ``max_message_size``,
which a publisher of ours configured with a larger cap does send; its subscribers must hear of it.

Reasons name the message by its id and the sending backend's pid (digits and letters only); they
never quote the payload.
"""

from __future__ import annotations

import binascii
import re
import time
from collections.abc import Callable, Collection

from ._codec import MARK

__all__ = ["GRACE", "Reassembler"]

#: Seconds a partial message's last fragment must be older than a completed round trip before
#: :meth:`Reassembler.expire` drops it.
GRACE = 1.0

#: ``RS KIND id ":" index "/" count ":"``: ASCII only (``[0-9]`` never matches other Unicode
#: digits, which ``str.isdigit`` and ``int`` accept).
_HEADER = re.compile(r"\x1e([TURB])([0-9A-Za-z]{1,32}):([1-9][0-9]{0,8})/([1-9][0-9]{0,8}):")
#: Canonical padded base64 (the unused bits of the last character zero), once its length is a
#: multiple of 4.
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*(?:[AQgw]==|[AEIMQUYcgkosw048]=)?")
_FRAGMENTS = frozenset("TURB")

#: ``reject(channel, reason)`` or ``gap(channel, reason)``, as the core's ``Link`` has them.
Report = Callable[[str, str], None]


class _Partial:
    """One message of which fragments 1 to ``index`` arrived."""

    __slots__ = (
        "channel",
        "count",
        "data",
        "dropped",
        "ident",
        "index",
        "kind",
        "last",
        "limit",
        "pid",
    )

    def __init__(
        self, channel: str, pid: int, ident: str, kind: str, count: int, limit: int
    ) -> None:
        self.channel = channel
        self.pid = pid
        self.ident = ident
        self.kind = kind
        self.count = count
        self.limit = limit
        self.index = 0
        self.data = bytearray()
        self.last = 0.0
        #: Over the cap and reported: its remaining fragments are skipped, not held.
        self.dropped = False

    def name(self) -> str:
        return f"message {self.ident} from backend {self.pid}"


class Reassembler:
    """Turns received payloads back into messages; one per listening session.

    ``max_size``: the subscriber's ``max_message_size`` in bytes. ``reject`` and ``gap`` report
    what was dropped (see the module docstring). :meth:`feed` never raises.
    """

    __slots__ = ("_gap", "_reject", "max_size", "partial")

    def __init__(self, max_size: int, reject: Report, gap: Report) -> None:
        self.max_size = max_size
        self._reject = reject
        self._gap = gap
        #: The message being put together, if any (the connection checks it on its hot path).
        self.partial: _Partial | None = None

    def feed(self, channel: str, pid: int, payload: str) -> str | bytes | None:
        """The message ``payload`` delivers (a whole one, or the last fragment of one), or None.

        Takes every payload while a message is partly received, else those beginning with MARK.
        """
        partial = self.partial
        if partial is not None:
            header = _HEADER.match(payload)
            if (
                header is not None
                and header[2] == partial.ident
                and pid == partial.pid
                and channel == partial.channel
            ):
                return self._next(partial, header, payload)
            self._drop(partial, "another notification came between its fragments")
        if not payload.startswith(MARK):
            return payload
        kind = payload[1:2]
        if kind in _FRAGMENTS:
            return self._first(channel, pid, payload)
        if kind in ("t", "u", "r", "b"):
            return self._whole(channel, kind, payload[2:])
        return payload  # not ours: a foreign payload that happens to begin with RS

    def expire(self, before: float) -> None:
        """Drop the partial message if its last fragment arrived before ``before``.

        Call it once a round trip on the listening session, sent after ``before + GRACE``
        (``time.monotonic()``), has returned: the rest of the message would have come first.
        """
        partial = self.partial
        if partial is not None and partial.last < before:
            self._drop(partial, "its remaining fragments never came")

    def forget(self, channels: Collection[str]) -> None:
        """Drop, uncounted, a partial message on a channel no longer listened to."""
        partial = self.partial
        if partial is not None and partial.channel in channels:
            self.partial = None

    # -- fragments ----------------------------------------------------------------------------

    def _first(self, channel: str, pid: int, payload: str) -> str | bytes | None:
        header = _HEADER.match(payload)
        if header is None:
            self._reject(channel, "a fragment whose header does not parse")
            return None
        kind, ident, index, count = header[1], header[2], int(header[3]), int(header[4])
        limit = self.max_size if kind in "TR" else _base64_size(self.max_size)
        if index != 1 or count > limit:  # every fragment but a lone one carries a byte at least
            what = "without the fragments before it" if index != 1 else "of an impossible count"
            self._reject(channel, f"fragment {index}/{count} of message {ident} {what}")
            return None
        partial = self.partial = _Partial(channel, pid, ident, kind, count, limit)
        return self._add(partial, payload[header.end() :])

    def _next(self, partial: _Partial, header: re.Match[str], payload: str) -> str | bytes | None:
        index, count = int(header[3]), int(header[4])
        if header[1] != partial.kind or count != partial.count or index != partial.index + 1:
            turn = f"fragment {index}/{count} came next"
            self._drop(partial, turn)
            self._reject(partial.channel, f"{partial.name()}: {turn}, out of turn")
            return None
        return self._add(partial, payload[header.end() :])

    def _add(self, partial: _Partial, chunk: str) -> str | bytes | None:
        if partial.dropped:
            self._skip(partial)
            return None
        if not chunk and partial.count > 1:
            self._drop(partial, f"fragment {partial.index + 1} is empty")
            return None
        try:
            data = chunk.encode()
        except UnicodeEncodeError:  # a lone surrogate: asyncpg never makes one, a caller might
            self._drop(partial, "a fragment is not valid Unicode")
            return None
        if len(partial.data) + len(data) > partial.limit:
            partial.dropped = True
            partial.data = bytearray()
            self._oversized(partial.channel, partial.name())
            self._skip(partial)
            return None
        partial.data += data
        partial.index += 1
        if partial.index < partial.count:
            partial.last = time.monotonic()
            return None
        self.partial = None
        return self._complete(partial)

    def _skip(self, partial: _Partial) -> None:
        """Count off a fragment of a message already dropped (and reported) as too large."""
        partial.index += 1
        if partial.index < partial.count:
            partial.last = time.monotonic()
        else:
            self.partial = None

    def _complete(self, partial: _Partial) -> str | bytes | None:
        kind = partial.kind
        if kind == "T":
            return partial.data.decode()  # UTF-8 by construction: encoded from str
        if kind == "R":
            return bytes(partial.data)
        return self._unbase64(partial.channel, kind.lower(), partial.data, partial.name())

    def _drop(self, partial: _Partial, why: str) -> None:
        self.partial = None
        if partial.dropped:
            return  # reported already
        self._reject(
            partial.channel,
            f"{partial.name()} dropped after fragment {partial.index}/{partial.count}: {why}",
        )

    def _oversized(self, channel: str, name: str) -> None:
        self._gap(
            channel,
            f"{name} was larger than this subscriber's max_message_size ({self.max_size} "
            "bytes) and was dropped; give every process the same max_message_size",
        )

    # -- bodies -------------------------------------------------------------------------------

    def _whole(self, channel: str, kind: str, body: str) -> str | bytes | None:
        if kind == "t":
            return body
        if kind == "r":
            try:
                return body.encode()
            except UnicodeEncodeError:
                self._reject(channel, "an 'r' message that is not valid Unicode")
                return None
        if not body.isascii():
            self._reject(channel, f"a {kind!r} message whose body is not base64")
            return None
        return self._unbase64(channel, kind, body.encode("ascii"), f"a {kind!r} message")

    def _unbase64(
        self, channel: str, kind: str, body: bytes | bytearray, name: str
    ) -> str | bytes | None:
        """The ``u``/``b`` message in base64 ``body``, or None (reported)."""
        if len(body) % 4 or _BASE64.fullmatch(body) is None:
            self._reject(channel, f"{name}: its body is not canonical base64")
            return None
        data = binascii.a2b_base64(body)
        if len(data) > self.max_size:
            self._oversized(channel, name)
            return None
        if kind == "b":
            return data
        try:
            return data.decode()
        except UnicodeDecodeError:
            self._reject(channel, f"{name}: its 'u' body is not UTF-8")
            return None


def _base64_size(size: int) -> int:
    """The length of the base64 of ``size`` bytes."""
    return (size + 2) // 3 * 4
