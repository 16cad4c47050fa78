"""The wire format without a server: every payload fits NOTIFY, and decoding gives the message back."""

from __future__ import annotations

import os
import random

import pytest

from opal_broadcast import InvalidMessage, MessageTooLarge
from opal_broadcast_postgres._codec import MARK, MAX_PAYLOAD_BYTES, Encoder
from opal_broadcast_postgres._reassembly import Reassembler

CAP = 1024 * 1024


def _refuse(channel: str, reason: str) -> None:
    raise AssertionError(f"dropped on {channel!r}: {reason}")


def _reassembler(cap: int = CAP) -> Reassembler:
    """A reassembler that fails the test on any drop."""
    return Reassembler(cap, _refuse, _refuse)


def _decode(payloads: list[str], pid: int = 1, channel: str = "c") -> str | bytes | None:
    reassembler = _reassembler()
    results = []
    for payload in payloads:
        if payload.startswith(MARK):
            results.append(reassembler.feed(channel, pid, payload))
        else:
            results.append(payload)
    assert all(result is None for result in results[:-1])
    return results[-1]


def _random_text(length: int, rng: random.Random) -> str:
    alphabet = "aZ09 \n\t\x1e\x00é€Ωж中🎉𝄞"
    return "".join(rng.choice(alphabet) for _ in range(length))


@pytest.mark.parametrize("seed", range(40))
def test_random_messages_fit_notify_and_round_trip(seed):
    """Random text and bytes of random sizes: each payload < 8000 bytes, no NUL, exact decode."""
    rng = random.Random(seed)
    encoder = Encoder(CAP)
    length = rng.choice([0, 1, 100, 1999, 2000, 2667, 7999, 8000, 20_000, 120_000])
    message: str | bytes = _random_text(length, rng) if seed % 2 else rng.randbytes(length)
    payloads = encoder.encode(message)
    for payload in payloads:
        assert len(payload.encode()) <= MAX_PAYLOAD_BYTES
        assert "\x00" not in payload
    assert len(set(payloads)) == len(payloads)  # Postgres would fold a repeated payload
    got = _decode(payloads)
    assert got == message
    assert type(got) is type(message)


def test_small_plain_text_is_unframed():
    """Text that NOTIFY carries as is goes out as is: zero overhead, readable by anyone."""
    encoder = Encoder(CAP)
    assert encoder.encode('{"op": "update"}') == ['{"op": "update"}']
    assert encoder.encode("€" * 2666 + "a") == ["€" * 2666 + "a"]
    assert encoder.encode("é" * 1999) == ["é" * 1999]


def test_each_fragmented_message_gets_its_own_id():
    """Two equal large messages differ on the wire (ids), so one transaction may hold both."""
    encoder = Encoder(CAP)
    first, second = encoder.encode("z" * 9000), encoder.encode("z" * 9000)
    assert not set(first) & set(second)


def test_non_unicode_server_gets_ascii_only():
    """On a non-UTF8 database, non-ASCII text is sent as base64 so the server converts nothing."""
    encoder = Encoder(CAP, unicode=False)
    payloads = encoder.encode("naïve")
    assert payloads == [MARK + "u" + "bmHDr3Zl"]
    assert all(payload.isascii() for payload in payloads)
    assert encoder.encode("ascii stays") == ["ascii stays"]
    assert _decode(encoder.encode(b"caf\xc3\xa9")) == b"caf\xc3\xa9"


def test_cap_is_in_bytes_and_checked_before_encoding_work():
    """The cap counts UTF-8 bytes: 1 MiB of ASCII passes, 1 MiB of characters in euros does not."""
    encoder = Encoder(CAP)
    assert len(encoder.encode("a" * CAP)) > 1
    with pytest.raises(MessageTooLarge):
        encoder.encode("€" * (CAP // 3 + 1))
    with pytest.raises(MessageTooLarge):
        encoder.encode(os.urandom(CAP + 1))
    with pytest.raises(InvalidMessage):
        encoder.encode(123)  # type: ignore[arg-type]


def test_out_of_order_or_oversized_fragments_are_dropped():
    """A gap in the sequence or a body beyond the receiver's cap yields nothing, and no leak."""
    payloads = Encoder(CAP).encode("x" * 30_000)
    dropped: list[str] = []
    reassembler = Reassembler(CAP, lambda c, r: dropped.append(r), _refuse)
    assert reassembler.feed("c", 1, payloads[0]) is None
    assert reassembler.feed("c", 1, payloads[2]) is None  # fragment 2 skipped
    assert reassembler.feed("c", 1, payloads[3]) is None
    assert reassembler.partial is None
    assert len(dropped) == 3  # the message, its fragment out of turn, and an orphan
    gaps: list[str] = []
    small = Reassembler(8000, _refuse, lambda c, r: gaps.append(r))
    big = Encoder(CAP).encode("y" * 200_000)
    assert [small.feed("c", 1, payload) for payload in big[:2]] == [None, None]
    assert small.partial is not None and not small.partial.data  # the rest is counted off
    assert [small.feed("c", 1, payload) for payload in big[2:]] == [None] * (len(big) - 2)
    assert small.partial is None
    assert len(gaps) == 1 and "max_message_size (8000 bytes)" in gaps[0]
