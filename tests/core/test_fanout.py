"""Fan-out: a slow subscriber never stalls the others, and learns exactly what it missed."""

import uuid

import anyio
import pytest

from opal_broadcast import Broadcast, Event, Gap, InvalidOption, SubscriberOverflow

pytestmark = pytest.mark.anyio


@pytest.fixture
def url():
    return f"memory://fanout-{uuid.uuid4().hex[:8]}"


async def test_slow_subscriber_is_dropped_with_the_count_it_missed(url):
    """Queue of 5, 12 messages: the fast one gets 12; the slow one 5, then SubscriberOverflow(7)."""
    async with Broadcast(url) as broadcast:
        async with broadcast.subscribe("c") as fast, broadcast.subscribe("c", max_queue=5) as slow:
            for i in range(12):
                await broadcast.publish("c", str(i))
            assert [(await fast.get()).message for _ in range(12)] == [str(i) for i in range(12)]
            assert [(await slow.get()).message for _ in range(5)] == ["0", "1", "2", "3", "4"]
            with pytest.raises(SubscriberOverflow) as caught:
                await slow.get()
            assert caught.value.gap.missed == 7
            assert "7 message(s)" in str(caught.value)
            # Ended for good, and no longer fed.
            await broadcast.publish("c", "later")
            assert await fast.get() == Event("c", "later")
            with pytest.raises(SubscriberOverflow):
                await slow.get()
            assert broadcast.health().subscribers == 1


async def test_keep_going_subscriber_gets_a_gap_marker_then_resumes(url):
    """Opt-in: 3 queued, a Gap marker with missed=4, then new messages again."""
    async with Broadcast(url) as broadcast:
        async with broadcast.subscribe("c", keep_going=True, max_queue=3) as slow:
            for i in range(7):
                await broadcast.publish("c", str(i))
            got = [await slow.get() for _ in range(4)]
            assert [e.message for e in got[:3] if isinstance(e, Event)] == ["0", "1", "2"]
            assert isinstance(got[3], Gap)
            assert got[3].missed == 4
            await broadcast.publish("c", "next")
            assert await slow.get() == Event("c", "next")


async def test_publisher_never_waits_for_a_stuck_subscriber(url):
    """1,000 publishes complete while a subscriber reads nothing (bounded queue, no backpressure)."""
    async with Broadcast(url) as broadcast, broadcast.subscribe("c", max_queue=10):
        with anyio.fail_after(5):
            for i in range(1000):
                await broadcast.publish("c", str(i))


async def test_a_cancelled_wait_loses_nothing_and_the_next_get_wakes(url):
    """A get() cancelled while waiting leaves no stale waiter: what is published next is read
    by the next get(), on asyncio (a loop future) and on trio (an anyio.Event) alike."""
    async with Broadcast(url) as broadcast, broadcast.subscribe("c") as subscriber:
        with anyio.move_on_after(0.05) as scope:
            await subscriber.get()
        assert scope.cancelled_caught
        await broadcast.publish("c", "after")  # wakes the cancelled waiter: must be harmless
        with anyio.fail_after(5):
            assert (await subscriber.get()).message == "after"
            async with anyio.create_task_group() as tasks:
                received: list[str] = []

                async def read() -> None:
                    received.append(str((await subscriber.get()).message))

                tasks.start_soon(read)
                await anyio.sleep(0.01)  # the reader is waiting now
                await broadcast.publish("c", "woken")
        assert received == ["woken"]


async def test_a_second_task_waiting_on_one_subscriber_is_refused(url):
    """Two tasks reading one subscriber at once: the second is told so at once (it used to
    take the first one's wake-up, leaving the first waiting for ever); the first still reads."""
    async with Broadcast(url) as broadcast, broadcast.subscribe("c") as subscriber:
        received: list[str] = []

        async def read() -> None:
            received.append(str((await subscriber.get()).message))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read)
                await anyio.sleep(0.01)  # the first reader is waiting now
                with pytest.raises(RuntimeError, match="Another task is already waiting"):
                    await subscriber.get()
                await broadcast.publish("c", "for the first")
        assert received == ["for the first"]


async def test_the_queue_is_bounded_in_bytes_as_well_as_in_messages(url):
    """10 KB of message memory: 1,000-byte messages fill it at 9, the rest are counted exactly,
    and the queue's bytes are given back as it is read (the same bound holds afterwards)."""
    payload = b"x" * 1000
    size = len(payload)
    fits = 10_000 // size
    async with Broadcast(url) as broadcast:
        async with broadcast.subscribe("c", max_queue_bytes=10_000) as slow:
            for _ in range(30):
                await broadcast.publish("c", payload)
            assert [(await slow.get()).message for _ in range(fits)] == [payload] * fits
            with pytest.raises(SubscriberOverflow) as caught:
                await slow.get()
            assert caught.value.gap.missed == 30 - fits
            assert "10000 bytes" in caught.value.gap.reason
        async with broadcast.subscribe("c", max_queue_bytes=10_000, keep_going=True) as again:
            for round_ in range(3):
                for _ in range(fits):
                    await broadcast.publish("c", payload)
                got = [await again.get() for _ in range(fits)]
                assert all(isinstance(event, Event) for event in got), round_


async def test_a_message_larger_than_the_byte_bound_still_reaches_an_empty_queue(url):
    """The byte bound never makes a message undeliverable: an empty queue takes one of any size."""
    big = "y" * 50_000
    async with Broadcast(url, max_queue_bytes=1_000) as broadcast:
        async with broadcast.subscribe("c", keep_going=True) as subscriber:
            await broadcast.publish("c", big)
            await broadcast.publish("c", "small")
            assert await subscriber.get() == Event("c", big)
            gap = await subscriber.get()
            assert isinstance(gap, Gap) and gap.missed == 1


async def test_the_byte_bound_comes_from_the_url_the_keyword_and_subscribe_in_that_order(url):
    """subscribe(max_queue_bytes=) beats Broadcast(max_queue_bytes=), which beats the URL's query."""
    payload = b"z" * 1000
    size = len(payload)
    async with (
        Broadcast(f"{url}?max_queue_bytes={3 * size}") as from_url,
        Broadcast(url, max_queue_bytes=5 * size) as from_keyword,
    ):
        async with (
            from_url.subscribe("a", keep_going=True) as a,
            from_keyword.subscribe("a", keep_going=True) as b,
            from_keyword.subscribe("a", keep_going=True, max_queue_bytes=2 * size) as c,
        ):
            for _ in range(10):
                await from_url.publish("a", payload)
            for subscriber, fits in ((a, 3), (b, 5), (c, 2)):
                got = [await subscriber.get() for _ in range(fits + 1)]
                assert got[-1] == Gap("a", got[-1].reason, 10 - fits, got[-1].at), fits


async def test_a_bad_byte_bound_given_to_subscribe_is_a_typed_error(url):
    """subscribe(max_queue_bytes=0) is refused before anything is subscribed."""
    async with Broadcast(url) as broadcast:
        for bad in (0, -1, 1.5, "10"):
            with pytest.raises(InvalidOption, match="max_queue_bytes"):
                broadcast.subscribe("c", max_queue_bytes=bad)
        assert broadcast.health().subscribers == 0
