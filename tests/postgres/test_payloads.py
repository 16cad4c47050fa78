"""Payloads of any size up to the cap arrive intact, atomically and in order; the wire format."""

from __future__ import annotations

import os

import anyio
import asyncpg
import pytest

from opal_broadcast import Broadcast, Event, InvalidMessage, MessageTooLarge
from opal_broadcast_postgres import DEFAULT_MAX_MESSAGE_SIZE

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

MIB = 1024 * 1024


async def _round_trip(url: str, channel: str, message: str | bytes) -> str | bytes:
    async with Broadcast(url) as broadcast, broadcast.subscribe(channel) as subscriber:
        await broadcast.publish(channel, message)
        with anyio.fail_after(20):
            return (await subscriber.get()).message


@pytest.mark.parametrize(
    "message",
    [
        "a" * 7999,
        "a" * 8000,
        "a" * 100_000,
        "€" * 2666 + "ab",  # 8000 bytes: one over the NOTIFY limit, in multi-byte text
        "€" * 2666 + "a",  # 7999 bytes: exactly the limit
        "a" + "€" * 2666,  # 7999 bytes, the last character multi-byte
        "€" * 2700,  # 8100 bytes from 2,700 characters (fails as a single NOTIFY)
        "🎉" * 5001,  # 4-byte characters across every fragment boundary
        "é" * 50_000 + "x" + "🎉" * 10_000,
    ],
    ids=[
        "7999-bytes",
        "8000-bytes",
        "100000-bytes",
        "euro-8000-bytes",
        "euro-7999-bytes",
        "euro-last-7999-bytes",
        "euro-2700",
        "astral-fragments",
        "mixed-widths",
    ],
)
async def test_text_of_any_size_round_trips_exactly(pg_url, channel, message):
    """Text at, just over and far over the 7,999-byte NOTIFY limit arrives intact, as str."""
    got = await _round_trip(pg_url, channel, message)
    assert type(got) is str
    assert got == message


@pytest.mark.parametrize(
    "message",
    [
        b"",
        "bytes that are UTF-8 ✓".encode(),
        bytes(range(256)),
        b"\x00" * 10,
        os.urandom(100_000),
        "€".encode() * 30_000,
    ],
    ids=["empty", "utf8", "all-byte-values", "nuls", "random-100k", "utf8-90k"],
)
async def test_bytes_round_trip_as_bytes(pg_url, channel, message):
    """Bytes come back as the same bytes, whatever they contain."""
    got = await _round_trip(pg_url, channel, message)
    assert type(got) is bytes
    assert got == message


@pytest.mark.parametrize(
    "message",
    [
        "a\x00b",
        "\x00",
        "\x1e",
        "\x1etext that begins with the marker",
        "\x1eT1:1/2:fake",
        "\x1e" * 9000,
    ],
    ids=["nul", "only-nul", "marker", "marker-prefix", "fake-fragment", "marker-9000"],
)
async def test_text_that_notify_cannot_carry_as_is_round_trips(pg_url, channel, message):
    """NUL (refused by Postgres text) and the framing marker are encoded and come back exactly."""
    got = await _round_trip(pg_url, channel, message)
    assert got == message
    assert type(got) is str


async def test_messages_up_to_the_cap_arrive_and_larger_ones_are_refused_before_sending(
    pg_url, channel
):
    """1 MiB (text and random bytes) arrives; 1 MiB + 1 byte is MessageTooLarge and never sent."""
    assert DEFAULT_MAX_MESSAGE_SIZE == MIB
    at_cap_text = "x" * MIB
    at_cap_bytes = os.urandom(MIB)
    async with Broadcast(pg_url) as broadcast, broadcast.subscribe(channel) as subscriber:
        await broadcast.publish(channel, at_cap_text)
        await broadcast.publish(channel, at_cap_bytes)
        with pytest.raises(MessageTooLarge, match="1048577 bytes"):
            await broadcast.publish(channel, "x" * (MIB + 1))
        with pytest.raises(MessageTooLarge):
            await broadcast.publish(channel, "€" * (MIB // 3 + 1))  # fewer chars than the cap
        with pytest.raises(MessageTooLarge):
            await broadcast.publish(channel, bytes(MIB + 1))
        await broadcast.publish(channel, "after")
        with anyio.fail_after(30):
            assert (await subscriber.get()).message == at_cap_text
            assert (await subscriber.get()).message == at_cap_bytes
            assert await subscriber.get() == Event(channel, "after")  # nothing else was sent


async def test_max_message_size_option_sets_the_cap(pg_url, channel):
    """max_message_size=10000: 10,000 bytes arrive, 10,001 are refused."""
    async with Broadcast(pg_url, max_message_size=10_000) as broadcast:
        async with broadcast.subscribe(channel) as subscriber:
            await broadcast.publish(channel, "y" * 10_000)
            with pytest.raises(MessageTooLarge, match="max_message_size"):
                await broadcast.publish(channel, "y" * 10_001)
            with anyio.fail_after(10):
                assert (await subscriber.get()).message == "y" * 10_000


async def test_lone_surrogate_is_a_typed_error(pg_url, channel):
    """Text that is not valid Unicode cannot be sent as text: InvalidMessage, nothing sent."""
    async with Broadcast(pg_url) as broadcast:
        with pytest.raises(InvalidMessage, match="surrogate"):
            await broadcast.publish(channel, "bad \ud800 text")


async def test_large_and_small_messages_from_one_publisher_keep_their_order(pg_url, channel):
    """Small, large, small, larger, small: delivered in publish order, each intact."""
    messages = ["s1", "L" * 100_000, "s2", os.urandom(300_000), "s3", "€" * 40_000, "s4"]
    async with Broadcast(pg_url) as broadcast, broadcast.subscribe(channel) as subscriber:
        for message in messages:
            await broadcast.publish(channel, message)
        with anyio.fail_after(30):
            got = [(await subscriber.get()).message for _ in messages]
    assert got == messages


async def test_concurrent_large_messages_from_many_sessions_are_not_mixed_up(pg_url, channel):
    """Six sessions publish fragmented messages at once: every one arrives whole, in order."""
    publishers, each = 6, 4
    expected = {
        p: [f"{p}:{i}:" + chr(65 + p) * (20_000 + 997 * i) for i in range(each)]
        for p in range(publishers)
    }
    async with Broadcast(pg_url) as listener, listener.subscribe(channel) as subscriber:

        async def publish_all(publisher: int) -> None:
            async with Broadcast(pg_url, share_connection=False) as own:
                for message in expected[publisher]:
                    await own.publish(channel, message)

        async with anyio.create_task_group() as tasks:
            for publisher in range(publishers):
                tasks.start_soon(publish_all, publisher)
        received: dict[int, list[str]] = {p: [] for p in range(publishers)}
        with anyio.fail_after(30):
            for _ in range(publishers * each):
                message = (await subscriber.get()).message
                received[int(message.split(":")[0])].append(message)
    assert received == expected


async def test_small_text_is_sent_unframed_and_large_text_as_documented_fragments(
    pg_url, postgres_url, channel
):
    """On the wire (a raw asyncpg listener): 7,999 bytes as is; 20,000 as RS 'T' fragments."""
    raw: list[str] = []
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.add_listener(channel, lambda *args: raw.append(args[3]))
        async with Broadcast(pg_url) as broadcast:
            await broadcast.publish(channel, "p" * 7999)
            await broadcast.publish(channel, "q" * 20_000)
            await broadcast.publish(channel, b"\xff")
        with anyio.fail_after(10):
            while len(raw) < 5:
                await anyio.sleep(0.01)
    finally:
        await connection.close()
    assert raw[0] == "p" * 7999
    fragments = raw[1:4]
    assert [f.split(":")[1] for f in fragments] == ["1/3", "2/3", "3/3"]
    assert all(f.startswith("\x1eT") and len(f.encode()) <= 7999 for f in fragments)
    assert "".join(f.split(":", 2)[2] for f in fragments) == "q" * 20_000
    assert raw[4] == "\x1eb/w=="  # bytes that are not UTF-8: base64


async def test_foreign_payloads_are_delivered_as_sent(pg_url, postgres_url, channel):
    """A plain pg_notify from another client arrives unchanged, even one that begins with RS."""
    async with Broadcast(pg_url) as broadcast, broadcast.subscribe(channel) as subscriber:
        connection = await asyncpg.connect(postgres_url)
        try:
            await connection.execute("SELECT pg_notify($1, $2)", channel, '{"from": "psql"}')
            await connection.execute("SELECT pg_notify($1, $2)", channel, "\x1eZ not ours")
        finally:
            await connection.close()
        with anyio.fail_after(10):
            assert (await subscriber.get()).message == '{"from": "psql"}'
            assert (await subscriber.get()).message == "\x1eZ not ours"
