"""What arrives, and where: str for text, bytes otherwise, every process, raw redis-py clients too."""

import sys
import uuid

import anyio
import pytest
import redis.asyncio as aioredis

from opal_broadcast import Broadcast, Event, InvalidChannel, InvalidMessage
from tests.redis.conftest import DEADLINE
from tests.services import close_redis_client as close

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture
def channel() -> str:
    return f"delivery-{uuid.uuid4().hex[:10]}"


async def receive(url: str, channel: str, messages: list[str | bytes], **options: object) -> list:
    async with Broadcast(url, **options) as broadcast, broadcast.subscribe(channel) as subscriber:
        for message in messages:
            await broadcast.publish(channel, message)
        with anyio.fail_after(DEADLINE):
            return [(await subscriber.get()).message for _ in messages]


async def test_text_arrives_as_str_and_other_bytes_as_bytes(redis_url, channel):
    """UTF-8 payloads are str (as broadcaster users expect); anything else stays bytes."""
    got = await receive(redis_url, channel, ["héllo", b"caf\xc3\xa9", b"\xff\x00\xfe", b""])
    assert got == ["héllo", "café", b"\xff\x00\xfe", ""]


async def test_decode_messages_false_delivers_bytes(redis_url, channel):
    """decode_messages=false: every payload arrives as the exact bytes published."""
    got = await receive(redis_url, channel, ["héllo", b"\xff"], decode_messages=False)
    assert got == ["héllo".encode(), b"\xff"]


async def test_large_message_round_trips(redis_url, channel):
    """A 5 MB message, split over many reads, arrives whole."""
    payload = bytes(range(256)) * (5 * 4096)
    assert await receive(redis_url, channel, [payload]) == [payload]


async def test_unicode_channel_names(redis_url):
    """Channel names are any text: sent as UTF-8, delivered under the name subscribed."""
    name = f"канал/ü 🎉 {uuid.uuid4().hex[:6]}"
    assert await receive(redis_url, name, ["x"]) == ["x"]


async def test_unencodable_text_is_refused_before_io(redis_url):
    """A lone surrogate can be neither a channel nor a message: typed errors, nothing sent."""
    async with Broadcast(redis_url) as broadcast:
        with pytest.raises(InvalidChannel):
            await broadcast.publish("bad\ud800", "x")
        with pytest.raises(InvalidMessage):
            await broadcast.publish("good", "bad\ud800")
        with pytest.raises(InvalidChannel):
            async with broadcast.subscribe("bad\ud800"):
                pass


async def test_interoperates_with_raw_redis_clients(redis_url, channel):
    """A plain redis-py PUBLISH reaches our subscribers, and our publish reaches a redis-py one."""
    raw = aioredis.Redis.from_url(redis_url)
    pubsub = raw.pubsub()
    try:
        await pubsub.subscribe(channel)
        async with Broadcast(redis_url) as broadcast, broadcast.subscribe(channel) as subscriber:
            await raw.publish(channel, "from redis-py")
            with anyio.fail_after(DEADLINE):
                assert await subscriber.get() == Event(channel, "from redis-py")
            await broadcast.publish(channel, "from opal-broadcast")
            seen: list[bytes] = []
            with anyio.fail_after(DEADLINE):
                while len(seen) < 2:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                    if message is not None:
                        seen.append(message["data"])
            assert seen == [b"from redis-py", b"from opal-broadcast"]
    finally:
        await close(pubsub)
        await close(raw)


CHILD = """
import sys, anyio
from opal_broadcast import Broadcast

async def main(url, channel):
    async with Broadcast(url) as b, b.subscribe(channel) as one, b.subscribe(channel) as two:
        print("ready", flush=True)
        for subscriber in (one, two):
            for _ in range(3):
                print((await subscriber.get()).message, flush=True)

anyio.run(main, sys.argv[1], sys.argv[2])
"""


async def test_fan_out_reaches_every_subscriber_in_every_process(redis_url, channel):
    """Two subscribers in another process and one here all get every message, in order."""
    async with (
        await anyio.open_process([sys.executable, "-c", CHILD, redis_url, channel]) as child,
        Broadcast(redis_url) as broadcast,
        broadcast.subscribe(channel) as here,
    ):
        assert child.stdout is not None
        lines: list[str] = []
        buffered = b""
        with anyio.fail_after(DEADLINE):
            async for chunk in child.stdout:
                buffered += chunk
                if b"ready\n" in buffered:
                    break
            for i in range(3):
                await broadcast.publish(channel, f"m{i}")
            assert [(await here.get()).message for _ in range(3)] == ["m0", "m1", "m2"]
            async for chunk in child.stdout:
                buffered += chunk
            lines = buffered.decode().split()
            assert await child.wait() == 0
    assert lines == ["ready", "m0", "m1", "m2", "m0", "m1", "m2"]
