"""Messages as Kafka records: ``str`` and ``bytes`` to a value and headers and back, and the
size a record may have (``max_request_size``). No I/O, no driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opal_broadcast.plugin import BackboneURL, InvalidMessage, MessageTooLarge

__all__ = ["BYTES_HEADER", "check_cap", "check_unparsed", "decode", "encode", "record_size"]

#: Record header marking a message published as ``bytes``: it is delivered as ``bytes`` even when
#: it happens to be valid UTF-8. Records without it (``str`` messages, other producers) are
#: delivered as ``str`` when they are UTF-8, else as ``bytes``.
BYTES_HEADER = "opal-broadcast-bytes"
_BYTES_HEADERS = [(BYTES_HEADER, b"")]
#: aiokafka's default ``max_request_size``.
DEFAULT_CAP = 1048576
#: A payload this far under the cap fits with all a record adds to it: the exact size is worked
#: out only nearer the cap.
_BATCH_OVERHEAD = 1024
#: A record batch's header, and the most a record adds to its key, value and headers (Kafka's
#: v2 format; aiokafka's producer refuses a record whose estimate is over ``max_request_size``).
_BATCH_HEADER = 61
_RECORD_FIELDS = 21

Headers = list[tuple[str, bytes]] | None


def encode(message: str | bytes) -> tuple[bytes, Headers]:
    """The record value and headers of ``message``."""
    if not isinstance(message, str):
        return message, _BYTES_HEADERS
    try:
        return message.encode(), None
    except UnicodeEncodeError as exc:
        raise InvalidMessage(
            f"The message is not valid Unicode text ({exc.reason} at {exc.start}): encode it "
            "yourself and publish bytes."
        ) from None


def decode(record: Any) -> str | bytes:
    """The message of a record with headers or without a value (the reader decodes the rest)."""
    value = record.value
    if value is None:  # a tombstone from some other producer
        return ""
    if record.headers:
        for key, _ in record.headers:
            if key == BYTES_HEADER:
                return value  # type: ignore[no-any-return]
    try:
        return value.decode()  # type: ignore[no-any-return]
    except UnicodeDecodeError:
        return value  # type: ignore[no-any-return]


def check_cap(payload: bytes, headers: Headers, cap: int) -> None:
    """Refuse a record over ``cap`` bytes, before anything is sent (exact: measured only near
    the cap)."""
    if len(payload) <= cap - _BATCH_OVERHEAD:
        return
    size = record_size(payload, headers)
    if size > cap:
        raise MessageTooLarge(
            f"The message is {len(payload)} bytes ({size} as a Kafka record), over the "
            f"{cap}-byte max_request_size; nothing was sent. Send less, or raise the kafka:// "
            "option max_request_size together with the brokers' message.max.bytes."
        )


def check_unparsed(url: BackboneURL, options: Mapping[str, Any], message: str | bytes) -> None:
    """:func:`check_cap` before the options are parsed (for the core's check while the brokers
    are unreachable): an option that is not a number yet is left to the connect to refuse."""
    cap = options.get("max_request_size", url.options.get("max_request_size", DEFAULT_CAP))
    if str(cap).isdigit():
        check_cap(*encode(message), int(cap))


def record_size(payload: bytes, headers: Headers) -> int:
    """The most a batch of this one record (no key) takes: what aiokafka's producer checks
    against ``max_request_size``."""
    fields = 1 + _field(len(payload)) + _varint(len(headers or ()))
    for key, value in headers or ():
        fields += _field(len(key.encode())) + _field(len(value))
    return _BATCH_HEADER + _RECORD_FIELDS + fields


def _field(length: int) -> int:
    """A length-prefixed field: the length as a varint, then the bytes."""
    return _varint(length) + length


def _varint(number: int) -> int:
    """Bytes of a non-negative number as a zig-zag varint (7 bits a byte)."""
    return ((number << 1).bit_length() + 6) // 7 or 1
