"""The RESP2 parsers (pure Python, and hiredis's): replies split anywhere arrive whole and in
order; garbage is a ProtocolError; a long message costs little more than itself. Both must behave
the same: the wire uses whichever is there."""

import importlib
import tracemalloc

import pytest

from opal_broadcast_redis import _hiredis
from opal_broadcast_redis._hiredis import HiredisParser, new_parser, parser_name
from opal_broadcast_redis._resp import ErrorReply, ProtocolError, command, publish_command
from opal_broadcast_redis._resp import Parser as PythonParser


@pytest.fixture(params=["python", "hiredis"])
def new(request):
    """Makes a parser of each kind."""
    if request.param == "python":
        return PythonParser
    hiredis = importlib.import_module("hiredis")  # a dev dependency: fails, never skips
    return lambda: HiredisParser(hiredis)


STREAM = (
    b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n"
    b":42\r\n+PONG\r\n-NOAUTH Authentication required.\r\n$-1\r\n*-1\r\n$0\r\n\r\n"
    b"*2\r\n*1\r\n:1\r\n$4\r\na\r\nb\r\n"
)
EXPECTED = [
    [b"message", b"ch", b"hello"],
    42,
    b"PONG",
    "NOAUTH",
    None,
    None,
    b"",
    [[1], b"a\r\nb"],
]


def normalise(replies):
    return [r.code if isinstance(r, ErrorReply) else r for r in replies]


def test_every_split_point_gives_the_same_replies(new):
    """Fed in two pieces cut at any byte, the stream parses to the same replies."""
    for cut in range(len(STREAM) + 1):
        parser = new()
        got = parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:])
        assert normalise(got) == EXPECTED, cut


def test_byte_at_a_time(new):
    """One byte per read still yields every reply exactly once."""
    parser = new()
    got = []
    for i in range(len(STREAM)):
        got += parser.feed(STREAM[i : i + 1])
    assert normalise(got) == EXPECTED


def test_large_bulk_in_many_chunks(new):
    """A 3 MB payload in 4 KB reads: nothing until it is complete, then the whole of it."""
    payload = bytes(range(256)) * 12288
    data = b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$%d\r\n%b\r\n:7\r\n" % (len(payload), payload)
    parser = new()
    got = []
    for i in range(0, len(data), 4096):
        got += parser.feed(data[i : i + 4096])
    assert got == [[b"message", b"c", payload], 7]


def test_garbage_is_a_protocol_error(new):
    """An unknown type byte, a length that is not a number or that is wrong: not trusted."""
    with pytest.raises(ProtocolError):
        new().feed(b"?what\r\n")
    with pytest.raises(ProtocolError):
        new().feed(b"$abc\r\n")
    with pytest.raises(ProtocolError):
        new().feed(b"$3\r\na\r\nb\r\n")


def test_commands_encode_as_arrays_of_bulk_strings(new):
    """Binary-safe encoding, the PUBLISH shortcut included."""
    assert command(b"PING") == b"*1\r\n$4\r\nPING\r\n"
    assert publish_command(b"c", b"a\r\nb") == command(b"PUBLISH", b"c", b"a\r\nb")
    parsed = new().feed(publish_command("ü".encode(), b"\x00"))
    assert parsed == [[b"PUBLISH", "ü".encode(), b"\x00"]]


def test_hiredis_is_the_parser_when_installed_and_python_otherwise(monkeypatch):
    assert isinstance(new_parser(), HiredisParser)
    assert parser_name().startswith("hiredis ")
    monkeypatch.setattr(_hiredis, "_hiredis", None)
    assert type(new_parser()) is PythonParser
    assert parser_name() == "python"


def bulk(payload):
    return b"$%d\r\n%b\r\n" % (len(payload), payload)


LONG_A = bytes(range(256)) * 300  # 76,800 bytes: over LONG, so received without extra copies
LONG_B = b"\x00\r\n" * 30000
LONG_STREAM = (
    b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n"
    + bulk(LONG_A)
    + bulk(LONG_B)
    + b"*4\r\n"
    + bulk(b"x")
    + b"*2\r\n"
    + bulk(LONG_A)
    + b"*2\r\n"
    + bulk(LONG_B)
    + b":1\r\n"
    + bulk(LONG_B)
    + b":2\r\n+PONG\r\n"
)
LONG_EXPECTED = [
    [b"message", b"c", LONG_A],
    LONG_B,
    [b"x", [LONG_A, [LONG_B, 1]], LONG_B, 2],
    b"PONG",
]


def test_long_bulk_strings_arrive_whole_wherever_they_are(new):
    """Long bulk strings in a push, alone, nested, two in one reply: whole and in place, for any
    read size and any cut near their headers, bytes and CRLFs."""
    assert new().feed(LONG_STREAM) == LONG_EXPECTED
    for size in (1000, 4096, 65536 + 7, 262144):
        parser = new()
        got = []
        for i in range(0, len(LONG_STREAM), size):
            got += parser.feed(LONG_STREAM[i : i + size])
        assert got == LONG_EXPECTED, size
    cuts = set()
    for payload in (LONG_A, LONG_B):
        at = LONG_STREAM.find(payload)
        cuts |= {at - 8 + d for d in range(12)} | {at + len(payload) + d for d in range(-2, 4)}
    for cut in sorted(cuts):
        parser = new()
        got = parser.feed(LONG_STREAM[:cut])
        for i in range(cut, len(LONG_STREAM), 50000):
            got += parser.feed(LONG_STREAM[i : i + 50000])
        assert got == LONG_EXPECTED, cut


def test_a_long_bulk_string_not_followed_by_crlf_is_a_protocol_error():
    """The CRLF after a long bulk string is checked like any other (hiredis skips it unread)."""
    parser = PythonParser()
    parser.feed(b"$%d\r\n" % len(LONG_A) + LONG_A[:1000])
    with pytest.raises(ProtocolError):
        parser.feed(LONG_A[1000:] + b"xx:1\r\n")


def reads(payload, size=262144):
    """A pub/sub push of ``payload`` as the socket delivers it, one read at a time."""
    data = b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$%d\r\n" % len(payload)
    yield data + payload[: size - len(data)]
    for i in range(size - len(data), len(payload), size):
        yield payload[i : i + size]
    yield b"\r\n:1\r\n"


def test_the_python_parser_copies_a_long_message_once():
    """32 MiB in 256 KiB reads: the parser's peak (tracemalloc) stays under 1.2x the payload."""
    payload = b"\xff" * (32 << 20)
    parser = PythonParser()
    got = []
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for data in reads(payload):
            got += parser.feed(data)
            del data
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert got == [[b"message", b"c", payload], 1]
    assert peak < 1.2 * len(payload), peak


def test_hiredis_lets_go_of_its_buffer_after_a_long_reply():
    """After a long reply, the reader that held it is replaced by one holding only what followed."""
    parser = HiredisParser(importlib.import_module("hiredis"))
    first = parser._reader
    got = []
    for data in reads(b"\xff" * (1 << 20)):
        got += parser.feed(data)
    assert got == [[b"message", b"c", b"\xff" * (1 << 20)], 1]
    assert parser._reader is not first
    assert parser.feed(b"+PO") == []
    assert parser._reader.len() < 16  # what it has consumed (":1\r\n", kept under 1 KiB) and "+PO"
    assert parser.feed(b"NG\r\n:2\r\n") == [b"PONG", 2]
