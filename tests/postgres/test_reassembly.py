"""The receiving side of the wire format against anything a client can NOTIFY (no server needed).

A reference reading of the spec in ``_codec``'s docstring (:func:`_check_delivery`) checks every
message the decoder delivers against the payloads it came from.
"""

from __future__ import annotations

import binascii
import itertools
import logging
import re
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opal_broadcast import MessageTooLarge
from opal_broadcast_postgres._codec import MARK, Encoder
from opal_broadcast_postgres._reassembly import Reassembler

CAP = 1024 * 1024
FUZZ_CAP = 8000  # the smallest cap max_message_size takes: fuzzed bodies reach it

_FRAGMENT = re.compile(r"\x1e([TURB])([0-9A-Za-z]{1,32}):([1-9][0-9]{0,8})/([1-9][0-9]{0,8}):")


class Recorder:
    """A reassembler with what it reported: ``rejects`` and ``gaps`` as (channel, reason)."""

    def __init__(self, cap: int = CAP) -> None:
        self.rejects: list[tuple[str, str]] = []
        self.gaps: list[tuple[str, str]] = []
        self.reassembler = Reassembler(
            cap, lambda c, r: self.rejects.append((c, r)), lambda c, r: self.gaps.append((c, r))
        )

    def feed(self, payload: str, channel: str = "c", pid: int = 1) -> str | bytes | None:
        if self.reassembler.partial is None and not payload.startswith(MARK):
            return payload  # as the connection does: plain text never reaches the reassembler
        return self.reassembler.feed(channel, pid, payload)

    def feed_all(self, payloads: list[str], channel: str = "c", pid: int = 1) -> list[object]:
        results = [self.feed(payload, channel, pid) for payload in payloads]
        return [result for result in results if result is not None]

    @property
    def reports(self) -> int:
        return len(self.rejects) + len(self.gaps)


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode()


def _fragments(kind: str, ident: str, body: str, cuts: list[int]) -> list[str]:
    """``body`` cut at ``cuts`` (character offsets) into spec fragments of ``kind``."""
    points = sorted({0, len(body), *(cut % (len(body) + 1) for cut in cuts)})
    chunks = [body[a:b] for a, b in itertools.pairwise(points)] or [""]
    count = len(chunks)
    return [f"{MARK}{kind}{ident}:{i}/{count}:{chunk}" for i, chunk in enumerate(chunks, 1)]


def _body(message: str | bytes, kind: str) -> str:
    """The canonical body of ``message`` as kind ``kind`` (either case) frames it."""
    kind = kind.lower()
    if kind == "t":
        assert isinstance(message, str)
        return message
    if kind == "u":
        assert isinstance(message, str)
        return _b64(message.encode())
    assert isinstance(message, bytes)
    return message.decode() if kind == "r" else _b64(message)


def _check_delivery(history: list[tuple[str, int, str]], message: str | bytes) -> None:
    """``message`` was delivered on the last payload of ``history``: it must be what the spec
    reads in the payloads that delivered it, framed exactly as an encoder frames it."""
    channel, pid, payload = history[-1]
    if not payload.startswith(MARK) or len(payload) < 2 or payload[1] not in "tTuUrRbB":
        assert message == payload  # a plain payload, or a foreign one beginning with RS
        return
    if payload[1:2] in "turb":
        assert type(message) is (str if payload[1] in "tu" else bytes)
        assert _body(message, payload[1]) == payload[2:]
        return
    last = _FRAGMENT.match(payload)
    assert last is not None, payload
    kind, ident, count = last[1], last[2], int(last[4])
    assert int(last[3]) == count
    frames = history[-count:]
    assert len(frames) == count
    chunks = []
    for index, (frame_channel, frame_pid, frame) in enumerate(frames, 1):
        header = _FRAGMENT.match(frame)
        assert header is not None, frame
        assert (frame_channel, frame_pid) == (channel, pid)
        assert (header[1], header[2], int(header[3]), int(header[4])) == (kind, ident, index, count)
        chunks.append(frame[header.end() :])
        assert chunks[-1] or count == 1
    assert type(message) is (str if kind in "TU" else bytes)
    assert _body(message, kind) == "".join(chunks)


def _feed_checked(recorder: Recorder, steps: list[tuple[str, int, str]]) -> list[object]:
    """Feed ``steps``; after each: deliveries well formed, every drop reported, state bounded."""
    reassembler = recorder.reassembler
    history: list[tuple[str, int, str]] = []
    delivered: list[object] = []
    for channel, pid, payload in steps:
        history.append((channel, pid, payload))
        before, before_index = reassembler.partial, getattr(reassembler.partial, "index", 0)
        reports = recorder.reports
        message = recorder.feed(payload, channel, pid)
        after = reassembler.partial
        if message is not None:
            _check_delivery(history, message)
            delivered.append(message)
        # Every drop is reported: the partial message ended without completing, the payload
        # neither delivered nor held.
        header = _FRAGMENT.match(payload)
        completed = (
            message is not None
            and before is not None
            and header is not None
            and (channel, pid, header[2]) == (before.channel, before.pid, before.ident)
            and int(header[3]) == before.count == before_index + 1
        )
        ended = before is not None and after is not before and not completed
        held = after is not None and (after is not before or after.index > before_index)
        dropped = message is None and not held
        assert recorder.reports - reports >= ended + dropped, (payload, recorder.rejects)
        if after is not None:
            assert len(after.data) <= after.limit <= (reassembler.max_size + 2) // 3 * 4
    return delivered


# -- strategies -------------------------------------------------------------------------------

_ids = st.text("0123456789abcdefXYZ", min_size=1, max_size=4)
_messages = st.one_of(st.text(max_size=60), st.binary(max_size=60))


@st.composite
def _framed(draw: st.DrawFn) -> list[str]:
    """One message framed as the spec allows: whole, or fragments cut anywhere allowed."""
    message = draw(_messages)
    kinds = "tTuU" if isinstance(message, str) else "bB" + ("rR" if _utf8(message) else "")
    kind = draw(st.sampled_from(kinds))
    body = _body(message, kind)
    if kind.islower():
        return [MARK + kind + body]
    return _fragments(kind, draw(_ids), body, draw(st.lists(st.integers(0, 200), max_size=5)))


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


#: Digits str.isdigit() accepts, and int() too but for the first: superscript two, Arabic-Indic
#: one, fullwidth one, mathematical bold three.
UNICODE_DIGITS = ["\u00b2", "\u0661", "\uff11", "\U0001d7d1"]
_digits = st.sampled_from(["1", "2", "3", "0", "01", "9999999999", "-1", "", *UNICODE_DIGITS])


@st.composite
def _hostile(draw: st.DrawFn) -> str:
    """A payload meant to break the framing: broken headers, bodies, or plain noise."""
    kind = draw(st.sampled_from("TURBturbZ"))
    choice = draw(st.integers(0, 3))
    if choice == 0:
        head = f"{draw(_ids)}:{draw(_digits)}/{draw(_digits)}:"
        return MARK + kind + head + draw(st.text(max_size=30))
    if choice == 1:
        return MARK + kind + draw(st.text(alphabet="AQgw=+/:0123456789Zz é²", max_size=30))
    if choice == 2:
        return MARK + draw(st.text(max_size=40))
    return draw(st.text(max_size=40))


@st.composite
def _streams(draw: st.DrawFn) -> list[tuple[str, int, str]]:
    """Framed messages, mutated (fragments dropped, repeated, swapped, mixed with hostile
    payloads), from a few channels and backends."""
    payloads: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        payloads += draw(_framed())
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(payloads)))
        mutation = draw(st.sampled_from(["drop", "repeat", "swap", "hostile"]))
        if mutation == "hostile" or not payloads:
            payloads.insert(at, draw(_hostile()))
        elif mutation == "drop":
            del payloads[min(at, len(payloads) - 1)]
        elif mutation == "repeat":
            payloads.insert(at, payloads[min(at, len(payloads) - 1)])
        elif at + 1 < len(payloads):
            payloads[at], payloads[at + 1] = payloads[at + 1], payloads[at]
    sources = st.tuples(st.sampled_from(["c", "d"]), st.sampled_from([1, 2]))
    steps = []
    for payload in payloads:
        channel, pid = draw(sources) if draw(st.integers(0, 4)) == 0 else ("c", 1)
        steps.append((channel, pid, payload))
    return steps


_FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.lists(st.tuples(st.sampled_from("cd"), st.integers(1, 2), st.text(max_size=80))))
def test_fuzz_arbitrary_text_never_raises_and_delivers_only_well_formed_messages(steps):
    """Any text on any channel from any backend: no exception, every delivery well formed,
    every drop reported, the partial message within its bound."""
    _feed_checked(Recorder(FUZZ_CAP), [(c, p, MARK + t if p == 2 else t) for c, p, t in steps])


@_FUZZ
@given(_streams())
def test_fuzz_mutated_frames_never_raise_and_deliver_only_well_formed_messages(steps):
    """Spec frames dropped, repeated, swapped, interleaved across channels and backends, mixed
    with broken headers and bodies: the same properties."""
    _feed_checked(Recorder(FUZZ_CAP), steps)


@_FUZZ
@given(st.lists(_framed(), max_size=8), st.lists(st.text(max_size=20), max_size=8))
def test_fuzz_well_formed_frames_all_arrive(messages, plain):
    """Spec frames, with plain messages on other channels between messages (never inside
    one): every message arrives, nothing is reported."""
    recorder = Recorder(FUZZ_CAP)
    steps = []
    for i, frames in enumerate(messages):
        steps += [("c", 1, frame) for frame in frames]
        if i < len(plain) and not plain[i].startswith(MARK):
            steps.append(("d", 2, plain[i]))
    delivered = _feed_checked(recorder, steps)
    assert len(delivered) == len(messages) + sum(1 for s in steps if s[0] == "d")
    assert recorder.reports == 0


# -- the strict codec, case by case -------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        *[f"a:{digit}/2:" for digit in UNICODE_DIGITS],
        *[f"a:1/{digit}:" for digit in UNICODE_DIGITS],
        *["a:01/2:", "a:0/0:", "a:1/1234567890:", "a:1/-2:", "a:12:", ":1/2:", "a" * 33 + ":1/2:"],
        *["\u00e9:1/2:", "a:1/2", "a;1/2:", "a:1/ 2:"],
    ],
)
def test_fragment_headers_take_ascii_digits_only(header, caplog):
    """Unicode digits, leading zeros, signs, long numbers, bad ids: rejected, counted, not
    logged by the plugin, never an exception."""
    recorder = Recorder()
    with caplog.at_level(logging.DEBUG):
        assert recorder.feed(f"{MARK}T{header}chunk") is None
    assert len(recorder.rejects) == 1
    assert recorder.reassembler.partial is None
    assert caplog.records == []


def test_duplicated_first_fragment_is_refused_with_the_original():
    """1/2, 1/2 again, 2/2: the duplicate breaks the message; nothing delivered, 3 reported."""
    recorder = Recorder()
    frames = [f"{MARK}Ta:1/2:Hello, ", f"{MARK}Ta:1/2:Bye, ", f"{MARK}Ta:2/2:world"]
    assert recorder.feed_all(frames) == []
    assert len(recorder.rejects) == 3
    assert recorder.feed_all([f"{MARK}Ta:1/2:Hello, ", f"{MARK}Ta:2/2:world"]) == ["Hello, world"]


@pytest.mark.parametrize(
    "steps",
    [
        [("c", 1, "\x1eTa:1/2:A"), ("c", 1, "\x1eBb:1/2:AA"), ("c", 1, "\x1eTa:2/2:B")],
        [("c", 1, "\x1eTa:1/2:A"), ("c", 2, "\x1eTa:2/2:B")],  # another backend, same id
        [("c", 1, "\x1eTa:1/2:A"), ("d", 1, "\x1eTa:2/2:B")],  # another channel
        [("c", 1, "\x1eTa:1/2:A"), ("d", 2, "plain"), ("c", 1, "\x1eTa:2/2:B")],
        [("c", 1, "\x1eTa:1/2:A"), ("c", 1, "\x1eBa:2/2:QQ==")],  # another kind
        [("c", 1, "\x1eTa:1/3:A"), ("c", 1, "\x1eTa:2/2:B")],  # another count
    ],
    ids=["interleaved", "other-backend", "other-channel", "between", "other-kind", "other-count"],
)
def test_fragments_must_arrive_consecutively_from_one_sender(steps):
    """What ends a partial message (anything between its fragments) drops it, reported; the
    orphaned fragments after it are dropped and reported too."""
    recorder = Recorder()
    delivered = [recorder.feed(payload, channel, pid) for channel, pid, payload in steps]
    plain = [payload for _, _, payload in steps if not payload.startswith(MARK)]
    assert [message for message in delivered if message is not None] == plain
    assert recorder.reassembler.partial is None
    assert len(recorder.rejects) >= 2
    assert recorder.gaps == []


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("\x1ebQQ==", b"A"),
        ("\x1ebQR==", None),  # not canonical: the unused bits set
        ("\x1ebQUI=", b"AB"),
        ("\x1ebQUJ=", None),
        ("\x1ebQQ", None),  # no padding
        ("\x1eb QQ==", None),
        ("\x1ebQ Q==", None),
        ("\x1ebQQ==QQ==", None),
        ("\x1eb", b""),
        ("\x1ebé===", None),
        ("\x1eu/w==", None),  # base64 of b"\xff": not UTF-8
        ("\x1euw6k=", "é"),
        ("\x1er\ud800", None),  # a lone surrogate (asyncpg never makes one)
        ("\x1eTa:1/1:\ud800", None),
        ("\x1eRa:1/1:", b""),  # an empty body: the one-fragment form of an empty message
        ("\x1eTa:1/2:", None),  # an empty fragment of a longer message
    ],
)
def test_bodies_are_decoded_strictly(payload, expected):
    """Base64 canonical and padded, 'u' bodies UTF-8, text valid Unicode; else reported."""
    recorder = Recorder()
    assert recorder.feed(payload) == expected
    assert len(recorder.rejects) == (expected is None)


def test_size_is_counted_in_utf8_bytes_and_oversize_is_a_gap():
    """At a 1 MiB cap, 1 MiB of 4-byte characters (262,144 of them) arrives; one character more
    is one gap on that channel, not a delivery; a message twice the cap is dropped as soon as it
    is over, the rest of its fragments counted off without being held or reported again."""
    recorder = Recorder(CAP)
    big = Encoder(4 * CAP)
    assert recorder.feed_all(big.encode("🎉" * (CAP // 4))) == ["🎉" * (CAP // 4)]
    assert recorder.feed_all(big.encode("🎉" * (CAP // 4 + 1))) == []
    assert [reason for _, reason in recorder.gaps] == [
        "message 2 from backend 1 was larger than this subscriber's max_message_size "
        "(1048576 bytes) and was dropped; give every process the same max_message_size"
    ]
    payloads = big.encode("€" * CAP)  # 3 MiB
    over = 0
    while len(recorder.gaps) == 1:
        assert recorder.feed(payloads[over]) is None
        over += 1
    assert over < len(payloads) // 2
    assert recorder.reassembler.partial is not None and not recorder.reassembler.partial.data
    assert recorder.feed_all(payloads[over:]) == []
    assert recorder.reassembler.partial is None
    assert recorder.feed_all(big.encode(b"\xff" * (CAP + 1))) == []  # over once decoded
    assert len(recorder.gaps) == 3
    assert recorder.rejects == []


def test_expire_drops_only_a_partial_older_than_the_round_trip():
    """expire(before) drops the partial message if its last fragment came before ``before``."""
    recorder = Recorder()
    assert recorder.feed("\x1eTa:1/2:A") is None
    last = recorder.reassembler.partial.last
    recorder.reassembler.expire(last)
    assert recorder.reassembler.partial is not None
    recorder.reassembler.expire(last + 0.001)
    assert recorder.reassembler.partial is None
    assert "never came" in recorder.rejects[0][1]
    assert recorder.feed("\x1eTa:1/2:A") is None
    recorder.reassembler.forget(["c"])  # unsubscribed: dropped, not counted
    assert recorder.reassembler.partial is None
    assert len(recorder.rejects) == 1


def test_hostile_partials_hold_one_bounded_message():
    """64 never-completed messages of 4-byte characters in a row (the old decoder kept 64 of
    them, sized in characters): one at a time is held, within the cap in bytes."""
    cap = 100_000
    recorder = Recorder(cap)
    fragment = "🎉" * 1990  # 7,960 bytes: 12 fragments of a 13-fragment message, 95,520 bytes
    tracemalloc.start()
    try:
        for ident in range(64):
            for index in range(1, 13):
                assert recorder.feed(f"{MARK}T{ident}:{index}/13:{fragment}") is None
            held = len(recorder.reassembler.partial.data)
            assert held == 12 * len(fragment.encode())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(recorder.rejects) == 63  # each ended by the next; the last one is still held
    assert peak < 2 * cap  # 64 x 95,520 bytes = 6.1 MB if all were kept


@pytest.mark.parametrize("cap", [8000, 100_003])
@pytest.mark.parametrize("kind", ["T", "U", "R", "B"])
def test_a_message_at_the_cap_arrives_whatever_its_frame(cap, kind):
    """Publisher and subscriber with one cap: a message of exactly the cap in bytes arrives,
    framed as text, text with NUL, UTF-8 bytes or other bytes; one byte more is refused by the
    publisher."""
    messages: dict[str, str | bytes] = {
        "T": "é" * (cap // 2) + "a" * (cap % 2),
        "U": "\x00" + "a" * (cap - 1),
        "R": b"a" * cap,
        "B": b"\xff" * cap,
    }
    message = messages[kind]
    payloads = Encoder(cap).encode(message)
    assert {payload[1] for payload in payloads} == {kind}
    recorder = Recorder(cap)
    assert recorder.feed_all(payloads) == [message]
    assert recorder.reports == 0
    with pytest.raises(MessageTooLarge):
        Encoder(cap).encode(message + message[:1])
