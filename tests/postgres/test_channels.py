"""Channel names: exact round trips for odd names, typed errors before any I/O for impossible ones."""

from __future__ import annotations

import uuid

import anyio
import pytest

from opal_broadcast import Broadcast, Event, InvalidChannel
from tests.services import TcpProxy

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


def _tag() -> str:
    return uuid.uuid4().hex[:8]


ODD_NAMES = [
    "MixedCase",
    "UPPER",
    "with space",
    'double"quote',
    "single'quote",
    "semi;colon; DROP TABLE x;--",
    "back\\slash",
    "dollar$$quoted$$",
    "tab\tand\nnewline",
    "ünïcödé-κανάλι",
    "emoji-🎉",
]


@pytest.mark.parametrize("name", ODD_NAMES)
async def test_odd_channel_names_round_trip_exactly(pg_url, name):
    """Case, spaces, quotes, semicolons and Unicode reach a subscriber of exactly that name."""
    channel = f"{name}-{_tag()}"
    async with Broadcast(pg_url) as broadcast, broadcast.subscribe(channel) as subscriber:
        await broadcast.publish(channel, "payload")
        with anyio.fail_after(10):
            assert await subscriber.get() == Event(channel, "payload")


async def test_names_differing_only_in_case_are_different_channels(pg_url):
    """Postgres folds nothing for our (quoted) names: 'Chan' and 'chan' are isolated."""
    tag = _tag()
    upper, lower = f"Chan-{tag}", f"chan-{tag}"
    async with Broadcast(pg_url) as broadcast, broadcast.subscribe(upper) as subscriber:
        await broadcast.publish(lower, "not for you")
        await broadcast.publish(upper, "for you")
        with anyio.fail_after(10):
            assert await subscriber.get() == Event(upper, "for you")


@pytest.mark.parametrize(
    "name",
    [
        "a" * 63,
        "€" * 21,  # 63 bytes in UTF-8
        "x" + "€" * 20 + "yy",  # 63 bytes, multi-byte characters in the middle
    ],
    ids=["ascii-63", "euro-63-bytes", "mixed-63-bytes"],
)
async def test_names_of_exactly_63_bytes_work(pg_url, name):
    """The longest name Postgres keeps whole is accepted and delivered."""
    assert len(name.encode()) == 63
    async with Broadcast(pg_url) as broadcast, broadcast.subscribe(name) as subscriber:
        await broadcast.publish(name, "edge")
        with anyio.fail_after(10):
            assert await subscriber.get() == Event(name, "edge")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("a" * 64, "64 bytes"),
        ("€" * 22, "66 bytes"),  # 22 characters, 66 bytes: characters would pass, bytes do not
        ("a" * 62 + "é", "64 bytes"),
        ("nul\x00inside", "NUL"),
        ("lone-\ud800-surrogate", "surrogate"),
    ],
    ids=["ascii-64", "euro-22-chars", "multibyte-boundary", "nul", "surrogate"],
)
async def test_impossible_names_are_refused_before_any_io(proxy: TcpProxy, name, match):
    """Over 63 bytes, NUL, invalid Unicode: InvalidChannel at once, with the link frozen."""
    async with Broadcast(proxy.url(), publish_timeout=5.0) as broadcast:
        proxy.stall()  # any I/O would now hang past the 1 s deadline
        try:
            with anyio.fail_after(1):
                with pytest.raises(InvalidChannel, match=match):
                    await broadcast.publish(name, "x")
                with pytest.raises(InvalidChannel, match=match):
                    async with broadcast.subscribe(name):
                        pass
        finally:
            proxy.resume()


async def test_empty_name_is_refused(pg_url):
    """An empty name is refused for publish and subscribe."""
    async with Broadcast(pg_url) as broadcast:
        with pytest.raises(InvalidChannel):
            await broadcast.publish("", "x")
        with pytest.raises(InvalidChannel):
            broadcast.subscribe("")
