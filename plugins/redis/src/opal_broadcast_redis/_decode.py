"""What a received payload is delivered as (``decode_messages``): ``str`` if it is UTF-8, else
the bytes as received.

A failed ``bytes.decode()`` is costly on a long payload: it first allocates a ``str`` for the
whole input, then copies the whole input into the ``UnicodeDecodeError``. So a payload of
:data:`CHECK_FROM` bytes or more is checked slice by slice first (one slice's memory), and only
UTF-8 is decoded: a long binary payload costs nothing more, a long text its ``str``.
"""

from __future__ import annotations

import codecs

__all__ = ["CHECK_FROM", "text_or_bytes"]

#: Payloads this long (bytes) are checked in slices of this size before they are decoded.
CHECK_FROM = 1024 * 1024


def text_or_bytes(data: bytes) -> str | bytes:
    """``data`` decoded from UTF-8, or ``data`` itself if it is not UTF-8."""
    if len(data) >= CHECK_FROM and not _is_utf8(data):
        return data
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data


def _is_utf8(data: bytes) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    with memoryview(data) as view:
        try:
            for start in range(0, len(view), CHECK_FROM):
                # A character cut by the slice's end is kept by the decoder for the next one.
                decoder.decode(view[start : start + CHECK_FROM])
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True
