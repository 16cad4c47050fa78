"""What a publisher that is not opal-broadcast can send: huge messages, floods, bytes that are
not UTF-8. Redis frames every message itself, so no publisher can send malformed RESP.

Raw redis-py clients publish. Memory is measured in a subprocess that only subscribes (its peak
RSS, ``VmHWM`` after resetting it through ``/proc/self/clear_refs``), on a private Redis that
never drops a slow subscriber (``roomy_redis``); the shared server keeps Redis's default limit,
and what it does to a message over that limit is tested here too.
"""

import hashlib
import json
import sys
import uuid

import anyio
import pytest
import redis.asyncio as aioredis

from opal_broadcast import Broadcast, Event, Gap
from opal_broadcast_redis._decode import CHECK_FROM, text_or_bytes
from tests.redis.conftest import DEADLINE, FAST
from tests.services import close_redis_client as close

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

MiB = 1024 * 1024

CHILD = """
import asyncio, gc, hashlib, json, sys
from opal_broadcast import Broadcast, SubscriberOverflow
from opal_broadcast_redis import _hiredis

def memory(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024

def ready():
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # VmHWM := VmRSS
    print("ready", flush=True)
    return memory("VmRSS:")

async def large(broadcast, channel):
    async with broadcast.subscribe(channel) as subscriber:
        base = ready()
        message = (await subscriber.get()).message
        peak = memory("VmHWM:") - base
        digest = hashlib.sha256(message).hexdigest()
        return {"type": type(message).__name__, "sha256": digest, "peak": peak}

async def stalled(broadcast, channel, other):
    async with broadcast.subscribe(channel) as stalled, broadcast.subscribe(other) as reader:
        base = ready()
        others = []
        while (message := (await reader.get()).message) != "done":
            others.append(message)
        peak = memory("VmHWM:") - base
        kept = []
        try:
            while True:
                kept.append(int((await stalled.get()).message[:8]))
        except SubscriberOverflow as overflow:
            missed = overflow.gap.missed
        return {"others": others, "peak": peak, "kept": kept, "missed": missed}

async def main(test, url, parser, *channels):
    if parser == "python":
        _hiredis._hiredis = None
    async with Broadcast(url) as broadcast:
        print(json.dumps(await globals()[test](broadcast, *channels)), flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture(params=["python", "hiredis"])
def parser(request) -> str:
    """The subscriber's RESP parser (hiredis is a dev dependency: never skipped)."""
    return request.param


def channel() -> str:
    return f"untrusted-{uuid.uuid4().hex[:10]}"


async def in_subscriber_process(url, parser, test, channels, publish) -> dict:
    """Run ``test`` in a subscriber process; once it is subscribed, ``publish``; its report."""
    command = [sys.executable, "-c", CHILD, test, url, parser, *channels]
    with anyio.fail_after(DEADLINE):
        async with await anyio.open_process(command) as child:
            assert child.stdout is not None
            lines = child.stdout  # a line is at most a few KB: one receive each
            assert (await lines.receive()).strip() == b"ready"
            raw = aioredis.Redis.from_url(url)
            try:
                await publish(raw)
            finally:
                await close(raw)
            output = b""
            async for chunk in lines:
                output += chunk
            assert await child.wait() == 0
    return json.loads(output)


async def test_a_100_mib_message_arrives_whole_and_costs_little_more_than_itself(
    roomy_redis, parser
):
    """A 100 MiB binary message: delivered intact; the subscriber's RSS grows by ~1.0x its size
    with the Python parser, ~2x with hiredis (its buffer, then the copy it hands out)."""
    payload = bytes(range(256)) * (100 * MiB // 256)
    name = channel()

    async def publish(raw):
        assert await raw.publish(name, payload) == 1

    report = await in_subscriber_process(roomy_redis, parser, "large", [name], publish)
    assert report["type"] == "bytes"
    assert report["sha256"] == hashlib.sha256(payload).hexdigest()
    limit = 1.3 if parser == "python" else 2.3
    assert report["peak"] < limit * len(payload), report["peak"] / len(payload)


async def test_a_stalled_subscriber_holds_its_bound_and_the_others_get_everything(
    roomy_redis, parser
):
    """200 MiB in 1 MiB messages for a subscriber that stops reading: the process grows by less
    than 100 MB, the subscriber has a gap with the exact count it missed, and a subscriber of
    another channel on the same Broadcast gets every message in between, without a gap."""
    stalled, other = channel(), channel()
    count = 200

    async def publish(raw):
        for i in range(count):
            await raw.publish(stalled, b"%08d" % i + b"\xff" * (MiB - 8))
            await raw.publish(other, str(i))
        await raw.publish(other, "done")

    report = await in_subscriber_process(roomy_redis, parser, "stalled", [stalled, other], publish)
    assert report["others"] == [str(i) for i in range(count)]
    assert report["peak"] < 100e6, report["peak"]
    kept = report["kept"]
    assert kept == list(range(len(kept)))
    assert 1 <= len(kept) <= 32  # what 32 MiB (max_queue_bytes) holds
    assert report["missed"] == count - len(kept)


async def test_payloads_that_are_not_utf8_arrive_as_bytes(redis_url):
    """Bytes that are not UTF-8, short or long (an invalid byte at the very end of 3 MiB): bytes,
    exactly as published; long UTF-8 text is str; another channel is unaffected; no gap."""
    binary, text = channel(), channel()
    long_text = "€ and ü, " * (CHECK_FROM // 3)  # 3.3 MB, characters cut at every 1 MiB slice
    payloads = [
        b"\xff\xfe\x00",
        "caf\u00e9".encode()[:-1],
        b"a" * (3 * MiB) + b"\xff",
        long_text.encode(),
    ]
    gaps: list[Gap] = []
    async with (
        Broadcast(redis_url, on_gap=gaps.append) as broadcast,
        broadcast.subscribe(binary) as first,
        broadcast.subscribe(text) as second,
    ):
        raw = aioredis.Redis.from_url(redis_url)
        try:
            for i, payload in enumerate(payloads):
                await raw.publish(binary, payload)
                await raw.publish(text, f"text {i}")
        finally:
            await close(raw)
        with anyio.fail_after(DEADLINE):
            got = [(await first.get()).message for _ in payloads]
            others = [(await second.get()).message for _ in payloads]
        health = broadcast.health()
    assert got[:3] == payloads[:3]
    assert all(type(message) is bytes for message in got[:3])
    assert got[3] == long_text
    assert others == [f"text {i}" for i in range(len(payloads))]
    assert gaps == []
    assert health.rejected == 0


def test_long_payloads_are_checked_in_slices_before_decoding():
    """UTF-8 cut anywhere by the slices is text; an invalid byte anywhere makes it bytes."""
    for shift in range(4):
        text = "x" * shift + "€🎉ü" * (CHECK_FROM // 3)
        assert text_or_bytes(text.encode()) == text
        broken = text.encode()[:-1]
        assert text_or_bytes(broken) is broken
    late = b"a" * (2 * CHECK_FROM) + b"\xc3"
    assert text_or_bytes(late) is late


async def test_a_message_over_the_pubsub_output_limit_is_a_gap(redis_url):
    """Redis drops a subscriber owed over 32 MB (client-output-buffer-limit pubsub, default):
    one 40 MiB message does it. The publisher is told it was received; the subscribers get a
    gap (every channel of that connection), and the connection comes back."""
    name, other = channel(), channel()
    async with (
        Broadcast(redis_url, **FAST) as broadcast,
        broadcast.subscribe(name, keep_going=True) as subscriber,
        broadcast.subscribe(other, keep_going=True) as bystander,
    ):
        raw = aioredis.Redis.from_url(redis_url)
        try:
            assert await raw.publish(name, b"\xff" * (40 * MiB)) == 1
            with anyio.fail_after(DEADLINE):
                gap = await subscriber.get()
                assert isinstance(gap, Gap)
                assert isinstance(await bystander.get(), Gap)
                while True:  # once resubscribed, messages flow again
                    await raw.publish(name, "after")
                    with anyio.move_on_after(0.2):
                        assert await subscriber.get() == Event(name, "after")
                        break
        finally:
            await close(raw)
    assert "lost" in gap.reason
