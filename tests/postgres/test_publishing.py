"""Publishing under load: coalesced round trips keep every publisher's order and fold nothing."""

from __future__ import annotations

from urllib.parse import urlsplit

import anyio
import asyncpg
import pytest

from opal_broadcast import BackboneUnavailable, Broadcast

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def _publishing_sessions(admin_url: str, app_name: str) -> int:
    connection = await asyncpg.connect(admin_url)
    try:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                f"{app_name}/publish",
            )
        )
    finally:
        await connection.close()


@pytest.mark.parametrize("pool_size", [1, 3])
async def test_many_concurrent_publishers_keep_their_order(
    pg_url, postgres_admin_url, app_name, channel, pool_size
):
    """50 tasks x 20 messages: all delivered, each task's in order, within pool_size sessions."""
    publishers, each = 50, 20
    async with Broadcast(pg_url, pool_size=pool_size) as broadcast:
        async with broadcast.subscribe(channel) as subscriber:

            async def publish_all(publisher: int) -> None:
                for i in range(each):
                    await broadcast.publish(channel, f"{publisher}:{i}")

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tasks:
                    for publisher in range(publishers):
                        tasks.start_soon(publish_all, publisher)
            sessions = await _publishing_sessions(postgres_admin_url, app_name)
            received: dict[int, list[int]] = {p: [] for p in range(publishers)}
            with anyio.fail_after(30):
                for _ in range(publishers * each):
                    sender, seq = str((await subscriber.get()).message).split(":")
                    received[int(sender)].append(int(seq))
    assert received == {p: list(range(each)) for p in range(publishers)}
    assert 1 <= sessions <= pool_size


async def test_identical_messages_published_at_once_are_not_folded(pg_url, channel):
    """Postgres folds equal (channel, payload) pairs in one transaction; coalescing must not."""
    copies = 40
    async with Broadcast(pg_url, pool_size=1) as broadcast:
        async with broadcast.subscribe(channel) as subscriber:
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tasks:
                    for _ in range(copies):
                        tasks.start_soon(broadcast.publish, channel, "same")
                    for _ in range(copies):
                        tasks.start_soon(broadcast.publish, channel, b"\xffsame")
            with anyio.fail_after(20):
                got = [(await subscriber.get()).message for _ in range(2 * copies)]
            await broadcast.publish(channel, "last")
            with anyio.fail_after(10):
                assert (await subscriber.get()).message == "last"  # nothing beyond the 80
    assert got.count("same") == copies
    assert got.count(b"\xffsame") == copies


async def test_large_and_small_messages_coalesced_together_arrive_intact(pg_url, channel):
    """Concurrent publishes of fragmented and small messages share round trips safely."""
    messages = [f"{i}:" + ("L" * 30_000 if i % 3 == 0 else "s") for i in range(60)]
    async with Broadcast(pg_url, pool_size=2) as broadcast:
        async with broadcast.subscribe(channel) as subscriber:
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tasks:
                    for message in messages:
                        tasks.start_soon(broadcast.publish, channel, message)
                got = [(await subscriber.get()).message for _ in messages]
    assert sorted(got) == sorted(messages)


async def test_cancelled_publishes_leave_no_stray_sessions(
    pg_url, postgres_admin_url, app_name, channel
):
    """Publishes cancelled before and during their round trip: still usable, pool size kept."""
    async with Broadcast(pg_url, pool_size=2) as broadcast:
        async with broadcast.subscribe(channel) as subscriber:
            for round_ in range(10):
                async with anyio.create_task_group() as tasks:
                    for i in range(10):
                        tasks.start_soon(broadcast.publish, channel, f"maybe-{round_}-{i}")
                    await anyio.sleep(0.0005 * round_)
                    tasks.cancel_scope.cancel()
            await broadcast.publish(channel, "certain")
            with anyio.fail_after(20):
                while (await subscriber.get()).message != "certain":
                    pass
            with anyio.fail_after(5):  # a dropped session's backend exits once it sees the EOF
                while await _publishing_sessions(postgres_admin_url, app_name) > 2:
                    await anyio.sleep(0.05)


async def test_a_publish_the_server_refuses_fails_at_once_and_keeps_its_session(
    pg_url, postgres_admin_url, channel
):
    """A publish refused by the server (here: no right to run pg_notify) raises a typed error
    naming the refusal, at once; the session stays in service, so with a pool of one, publishing
    works again as soon as the server allows it (it used to leak the lane and time out)."""
    # Functions' rights are per database: the superuser, in the database the plugin uses.
    database = urlsplit(pg_url).path
    admin = await asyncpg.connect(urlsplit(postgres_admin_url)._replace(path=database).geturl())
    revoke = "REVOKE EXECUTE ON FUNCTION pg_notify(text, text) FROM PUBLIC"
    grant = "GRANT EXECUTE ON FUNCTION pg_notify(text, text) TO PUBLIC"
    try:
        async with Broadcast(pg_url, pool_size=1, publish_timeout=5) as broadcast:
            async with broadcast.subscribe(channel) as subscriber:
                await broadcast.publish(channel, "allowed")
                await admin.execute(revoke)
                try:
                    for attempt in range(3):
                        with anyio.fail_after(2), pytest.raises(BackboneUnavailable) as caught:
                            await broadcast.publish(channel, f"refused {attempt}")
                        assert "refused" in str(caught.value)
                        assert "permission denied" in str(caught.value)
                finally:
                    await admin.execute(grant)
                with anyio.fail_after(2):
                    await broadcast.publish(channel, "allowed again")
                    assert (await subscriber.get()).message == "allowed"
                    assert (await subscriber.get()).message == "allowed again"
    finally:
        await admin.execute(grant)
        await admin.close()
