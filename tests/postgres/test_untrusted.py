"""What a client that is not opal-broadcast can NOTIFY: undecodable bodies, broken framing,
floods, messages that never complete or exceed the cap. Each costs one message on its own
channel, counted in ``health().rejected`` (or one gap, for a message over the cap), never a gap
elsewhere, a reconnect, a traceback or a log line per payload.

A raw asyncpg connection is the hostile publisher; each list of payloads it sends goes out in one
transaction, in order (as this plugin's publisher sends a message's fragments). Memory is measured
with tracemalloc around the flood, in the subscribing process; the large payloads are made by the
server (``generate_series``), so the publisher's own memory does not count.
"""

from __future__ import annotations

import logging
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import anyio
import asyncpg
import pytest

from opal_broadcast import Broadcast, ConfigurationError, Event, Gap
from opal_broadcast_postgres._connection import SAFE_ENCODINGS

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

FAST = {"probe_interval": 0.2, "probe_timeout": 2.0}
NOTIFY_MANY = "SELECT count(pg_notify(c, p)) FROM unnest($1::text[], $2::text[]) AS t(c, p)"
MiB = 1024 * 1024


@pytest.fixture
async def hostile(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw asyncpg session on the test database: the publisher that is not ours."""
    connection = await asyncpg.connect(postgres_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def other(channel: str) -> str:
    """A second channel, which must see nothing of what happens on ``channel``."""
    return channel + "-other"


async def _notify(connection: asyncpg.Connection, *pairs: tuple[str, str]) -> None:
    """NOTIFY each (channel, payload) in ``pairs``, in order, in one transaction."""
    await connection.fetchval(NOTIFY_MANY, [c for c, _ in pairs], [p for _, p in pairs])


async def _generated(
    connection: asyncpg.Connection, channel: str, payload: str, count: int
) -> None:
    """NOTIFY ``count`` payloads made by the server from the SQL expression ``payload`` of ``n``
    (0, 1, ...), in order, in one transaction: no client memory to measure."""
    query = f"SELECT count(pg_notify($1, {payload})) FROM generate_series(0, $2 - 1) AS n"
    await connection.fetchval(query, channel, count)


async def _until(condition: Callable[[], bool], timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


async def _gets(subscriber: object, count: int) -> list[object]:
    with anyio.fail_after(10):
        return [await subscriber.get() for _ in range(count)]  # type: ignore[attr-defined]


def _undisturbed(broadcast: Broadcast) -> None:
    health = broadcast.health()
    assert (health.gaps, health.reconnects, health.state) == (0, 0, "connected")


@pytest.fixture
async def database(
    postgres_admin_url: str, pg_url: str
) -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    """``await database(encoding)``: the URL of a new database in ``encoding`` (dropped after)."""
    admin = await asyncpg.connect(postgres_admin_url)
    made: list[str] = []

    async def make(encoding: str) -> str:
        name = f"opal_test_{encoding.lower()}_{uuid.uuid4().hex[:8]}"
        await admin.execute(
            f"CREATE DATABASE {name} ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' "
            "TEMPLATE template0 OWNER opal"
        )
        made.append(name)
        return urlsplit(pg_url)._replace(path=f"/{name}").geturl()

    try:
        yield make
    finally:
        for name in made:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@pytest.mark.parametrize("encoding", ["SQL_ASCII", "WIN1252", "EUC_JP"])
async def test_a_database_whose_encoding_lets_one_notify_end_the_session_is_refused(
    database, postgres_admin_url, app_name, encoding
):
    """SQL_ASCII (no check: asyncpg cannot decode), WIN1252 and EUC_JP (characters without a
    UTF-8 equivalent: the server ends the session): a ConfigurationError saying to use a UTF8
    database, raised at connect, no session left behind."""
    url = await database(encoding)
    with pytest.raises(ConfigurationError, match=f"encoding is {encoding}") as caught:
        async with Broadcast(url):
            pass
    assert "UTF8 database" in str(caught.value)
    assert "CREATE DATABASE opal_broadcast ENCODING 'UTF8'" in str(caught.value)
    admin = await asyncpg.connect(postgres_admin_url)
    try:
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1"
        assert await admin.fetchval(query, f"{app_name}/%") == 0
    finally:
        await admin.close()


@pytest.mark.parametrize(("encoding", "bad"), [("SQL_ASCII", b"\xff"), ("WIN1252", b"\x81")])
async def test_why_refuse_one_notify_ends_a_raw_listening_session(database, channel, encoding, bad):
    """Without the plugin: in SQL_ASCII asyncpg cannot decode the payload, in WIN1252 the server
    cannot convert it; either way a plain asyncpg listener loses its session (which is why such
    a database is refused rather than served)."""
    url = await database(encoding)
    listener = await asyncpg.connect(url)
    publisher = await asyncpg.connect(url, server_settings={"client_encoding": encoding})
    try:
        await listener.add_listener(channel, lambda *args: None)
        await publisher.execute(
            f"SELECT pg_notify('{channel}', convert_from('\\x{bad.hex()}'::bytea, '{encoding}'))"
        )
        await _until(listener.is_closed)
    finally:
        await publisher.close()
        await listener.close()


async def test_the_accepted_encodings_have_every_character_in_utf8(postgres_admin_url):
    """Every byte of each accepted single-byte encoding converts to UTF-8 on this server (so no
    payload can fail on its way to the listener); a refused one has a byte that does not."""
    admin = await asyncpg.connect(postgres_admin_url)
    every_byte = bytes(range(1, 256))
    convert = "SELECT convert($1::bytea, $2, 'UTF8')"
    try:
        for encoding in sorted(SAFE_ENCODINGS - {"UTF8"}):
            assert len(await admin.fetchval(convert, every_byte, encoding)) >= 255, encoding
        for encoding in ("WIN1252", "LATIN3", "ISO_8859_7"):
            with pytest.raises(asyncpg.UntranslatableCharacterError):
                await admin.fetchval(convert, every_byte, encoding)
        with pytest.raises(asyncpg.UntranslatableCharacterError):  # a user-defined character
            await admin.fetchval(convert, b"\xf5\xa1", "EUC_JP")
    finally:
        await admin.close()


async def test_a_latin1_database_carries_any_character_a_client_sends(database, channel):
    """LATIN1 is accepted: a raw client's payload of every byte from 0x20 to 0xFF arrives as
    the same characters, and the plugin's own non-ASCII text round trips (sent as base64)."""
    url = await database("LATIN1")
    every = bytes(range(0x20, 0x100)).decode("latin-1")
    async with Broadcast(url) as broadcast, broadcast.subscribe(channel) as subscriber:
        raw = await asyncpg.connect(url, server_settings={"client_encoding": "LATIN1"})
        try:
            await raw.execute("SELECT pg_notify($1, $2)", channel, every)
        finally:
            await raw.close()
        await broadcast.publish(channel, "naïve €")
        assert await _gets(subscriber, 2) == [Event(channel, every), Event(channel, "naïve €")]
        _undisturbed(broadcast)


BAD = [
    "\x1eb!!!!",  # not base64
    "\x1eu/w==",  # base64 of bytes that are not UTF-8
    "\x1eTa:²/2:x",  # a Unicode digit (str.isdigit() is True, int() fails on some)
    "\x1eTz:2/3:orphan",  # its first fragment never sent
    "\x1eTq:1/2:half",  # its second fragment never sent (the next notification ends it)
]


async def test_undecodable_payloads_cost_one_message_each_and_nothing_elsewhere(
    pg_url, hostile, channel, other, caplog
):
    """Ten transactions of good messages on one channel around bad payloads on another: every
    good one arrives, no gap and no reconnect anywhere, each bad one counted on its channel,
    one WARNING line in all, no traceback."""
    async with Broadcast(pg_url, **FAST) as broadcast:
        async with broadcast.subscribe(other) as good, broadcast.subscribe(channel) as bad:
            for round_ in range(10):
                pairs = [(other, f"good {round_}"), *[(channel, p) for p in BAD]]
                await _notify(hostile, *pairs, (other, f"after {round_}"))
                await anyio.sleep(0.05)
            got = await _gets(good, 20)
            assert [event.message for event in got] == [  # type: ignore[attr-defined]
                f"{what} {i}" for i in range(10) for what in ("good", "after")
            ]
            await _notify(hostile, (channel, "ok"))
            assert await _gets(bad, 1) == [Event(channel, "ok")]
            _undisturbed(broadcast)
            assert broadcast.health().rejected_by_channel == {channel: 10 * len(BAD)}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert channel in warnings[0].getMessage()


async def test_floods_of_malformed_headers_and_orphans_are_counted_not_logged(
    pg_url, hostile, channel, other, caplog
):
    """20,000 headers with '²' for a digit and 20,000 orphan fragments: 40,000 rejected, one
    log line, no traceback; the other channel carries on."""
    async with Broadcast(pg_url) as broadcast:
        async with broadcast.subscribe(other) as good, broadcast.subscribe(channel):
            await _notify(hostile, *[(channel, f"\x1eT{i}:1/²:x") for i in range(20_000)])
            await _notify(hostile, *[(channel, f"\x1eT{i}:2/2:x") for i in range(20_000)])
            await _notify(hostile, (other, "still here"))
            assert await _gets(good, 1) == [Event(other, "still here")]
            await _until(lambda: broadcast.health().rejected == 40_000)
            _undisturbed(broadcast)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


async def test_duplicated_interleaved_and_split_fragments_are_refused(
    pg_url, postgres_url, hostile, channel, other
):
    """A repeated first fragment, two messages' fragments interleaved, and a message split over
    two transactions with another session's notification between: nothing delivered from them,
    each broken message and stray fragment counted."""
    async with Broadcast(pg_url) as broadcast:
        async with broadcast.subscribe(other) as good, broadcast.subscribe(channel) as bad:
            duplicated = ["\x1eTa:1/2:Hello, ", "\x1eTa:1/2:Bye, ", "\x1eTa:2/2:world"]
            await _notify(hostile, *[(channel, p) for p in duplicated])  # 3 rejected
            interleaved = ["\x1eTa:1/2:A", "\x1eBb:1/2:AA", "\x1eTa:2/2:B", "\x1eBb:2/2:QQ=="]
            await _notify(hostile, *[(channel, p) for p in interleaved])  # 4 rejected
            second = await asyncpg.connect(postgres_url)
            try:
                await _notify(hostile, (channel, "\x1eTc:1/2:A"))
                await _notify(second, (other, "between"))
                await _notify(hostile, (channel, "\x1eTc:2/2:B"))  # 2 rejected
            finally:
                await second.close()
            await _notify(hostile, (channel, "ok"))
            assert await _gets(bad, 1) == [Event(channel, "ok")]
            assert await _gets(good, 1) == [Event(other, "between")]
            _undisturbed(broadcast)
            assert broadcast.health().rejected_by_channel == {channel: 9}


async def test_a_message_that_never_completes_is_dropped_after_the_next_probe(
    pg_url, hostile, channel
):
    """Fragment 1 of 3 and then silence: dropped once a probe's round trip shows the rest is
    not coming (within probe_interval plus a second), counted, no gap."""
    async with Broadcast(pg_url, **FAST) as broadcast, broadcast.subscribe(channel):
        reassembler = broadcast._hub.connection._reassembler
        await _notify(hostile, (channel, "\x1eTp:1/3:" + "x" * 7000))
        await _until(lambda: reassembler.partial is not None)
        with anyio.fail_after(3):
            while reassembler.partial is not None:
                await anyio.sleep(0.02)
        assert broadcast.health().rejected_by_channel == {channel: 1}
        _undisturbed(broadcast)


async def test_never_completed_messages_hold_one_message_within_the_cap(
    pg_url, hostile, channel, other
):
    """64 messages of 4-byte characters, 12 of 13 fragments each (95,520 bytes, under a
    100,000-byte cap), one after another: at most one is held at a time (the decoder used to
    keep all 64: 6.1 MB here, 390 MB at a 1 MiB cap); the subscriber's traced memory peaks far
    below what 64 would take."""
    fragment = "🎉" * 1990  # 7,960 bytes
    async with Broadcast(pg_url, max_message_size=100_000, **FAST) as broadcast:
        async with broadcast.subscribe(other) as good, broadcast.subscribe(channel):
            tracemalloc.start()
            try:  # message n // 12, fragment n % 12 + 1
                payload = "chr(30) || 'T' || n / 12 || ':' || mod(n, 12) + 1 || '/13:' || "
                await _generated(hostile, channel, f"{payload}'{fragment}'", 64 * 12)
                await _notify(hostile, (other, "after"))
                assert await _gets(good, 1) == [Event(other, "after")]
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            await _until(lambda: broadcast.health().rejected == 64)
            assert broadcast._hub.connection._reassembler.partial is None
            _undisturbed(broadcast)
    # Measured 1.2 MB (asyncpg's read buffers, one message's 95,520 bytes); all 64 held would be
    # 64 x 12 x 7,960 = 6.1 MB more.
    assert peak < 3 * MiB


async def test_a_message_over_the_cap_in_bytes_is_one_gap_on_its_channel_only(
    pg_url, hostile, channel, other
):
    """A complete 1.5 MB message of 4-byte characters (376,110 characters, which the decoder
    used to count and deliver) at a 1 MiB cap: one gap on its channel (an opal publisher with a
    larger cap sends such messages), not delivered, never held beyond the cap; nothing
    elsewhere."""
    payload = "chr(30) || 'Tbig:' || n + 1 || '/189:' || '" + "🎉" * 1990 + "'"
    async with Broadcast(pg_url) as broadcast:
        async with (
            broadcast.subscribe(other) as good,
            broadcast.subscribe(channel, keep_going=True) as subscriber,
        ):
            tracemalloc.start()
            try:
                await _generated(hostile, channel, payload, 189)  # 1,504,440 bytes
                await _notify(hostile, (other, "after"))
                assert await _gets(good, 1) == [Event(other, "after")]
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            await _notify(hostile, (channel, "ok"))
            marker, after = await _gets(subscriber, 2)
            assert isinstance(marker, Gap)
            assert "max_message_size (1048576 bytes)" in marker.reason
            assert after == Event(channel, "ok")
            health = broadcast.health()
            assert (health.gaps, health.rejected, health.reconnects) == (1, 0, 0)
    # Measured 1.9 MB: the body as bytes up to the cap (with a bytearray's headroom) and asyncpg's
    # read buffers; the old decoder held the 1.5 MB as characters, joined them and delivered it.
    assert peak < 3 * MiB
