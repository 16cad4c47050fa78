"""The RESP2 parsers (pure Python, and hiredis's): replies split anywhere arrive whole and in
order; garbage is a ProtocolError. Both must behave the same: the wire uses whichever is there."""

import importlib

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
