"""Losing publishing sessions is no gap: subscribers go on, publishing goes on on new sessions.

NOTIFYs reach subscribers through the listening session, so a ``pg_terminate_backend`` of the
publishing sessions (``<application_name>/publish``) loses them nothing: no gap, no reconnect. A
publish in flight on a terminated session fails with ``BackboneUnavailable``; the rest go through.
"""

from __future__ import annotations

import gc

import anyio
import pytest

from opal_broadcast import BackboneUnavailable, Broadcast, Event, Gap
from tests.services import terminate_pg_backends

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

FAST = {
    "probe_interval": 0.3,
    "probe_timeout": 0.7,
    "publish_timeout": 2.0,
    "connect_timeout": 2.0,
    "reconnect_max_delay": 0.3,
}
PUBLISHERS = 4
DEADLINE = 20.0


async def test_terminating_publishing_sessions_is_no_gap(pg_url, app_name, channel, unraisable):
    """Four steady publishers, their sessions terminated twice: no gap, every publish that returned
    is delivered once and in its publisher's order, and one that failed failed typed."""
    gaps: list[Gap] = []
    sent: list[list[int]] = [[] for _ in range(PUBLISHERS)]
    failed: list[list[int]] = [[] for _ in range(PUBLISHERS)]
    received: list[list[int]] = [[] for _ in range(PUBLISHERS)]
    done = anyio.Event()
    async with Broadcast(pg_url, on_gap=gaps.append, **FAST) as broadcast:
        async with (
            broadcast.subscribe(channel) as default,
            broadcast.subscribe(channel, keep_going=True) as keeper,
        ):

            async def publish_steadily(who: int) -> None:
                number = 0
                while not done.is_set():
                    try:
                        await broadcast.publish(channel, f"{who}:{number}")
                    except BackboneUnavailable:  # in flight on a terminated session
                        failed[who].append(number)
                    else:
                        sent[who].append(number)
                    number += 1
                    await anyio.sleep(0.002)
                await broadcast.publish(channel, f"{who}:stop")

            async def read() -> None:
                stopped = 0
                async for event in default:  # a gap would end this with SubscriptionGap
                    who, _, number = str(event.message).partition(":")
                    if number == "stop":
                        stopped += 1
                        if stopped == PUBLISHERS:
                            return
                    else:
                        received[int(who)].append(int(number))

            async def until_sent(count: int) -> None:
                while sum(map(len, sent)) < count:
                    await anyio.sleep(0.005)

            with anyio.fail_after(DEADLINE):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(read)
                    for who in range(PUBLISHERS):
                        tasks.start_soon(publish_steadily, who)
                    for kill in range(2):
                        await until_sent(100 * (kill + 1))
                        name = f"{app_name}/publish"
                        assert await terminate_pg_backends(application_name=name) >= 1
                    await until_sent(300)
                    done.set()
                kept: list[Event | Gap] = []
                while len(kept) < sum(map(len, received)) + PUBLISHERS:
                    kept.append(await keeper.get())

            assert all(isinstance(item, Event) for item in kept)
            for who in range(PUBLISHERS):
                assert received[who] == sorted(set(received[who]))  # in order, no duplicates
                assert set(sent[who]) <= set(received[who]) <= set(sent[who]) | set(failed[who])
            health = broadcast.health()
    assert (health.gaps, health.reconnects, gaps) == (0, 0, [])
    gc.collect()
    assert unraisable == []
