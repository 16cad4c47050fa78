"""The plugin's connection object on its own, with a link that records what it reports."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import anyio
import asyncpg
import pytest

from opal_broadcast import BackboneURL, Broadcast
from opal_broadcast_postgres._connect import open_connection
from opal_broadcast_postgres._connection import PostgresConnection
from opal_broadcast_postgres._options import PostgresConfig
from tests.services import terminate_pg_backends

pytestmark = pytest.mark.anyio


class RecordingLink:
    """A Link that keeps what the plugin delivers and reports."""

    def __init__(self) -> None:
        self.resume_state: dict[str, Any] = {}
        self.delivered: list[tuple[str, str | bytes]] = []
        self.losses: list[str | BaseException] = []

    def deliver(self, channel: str, message: str | bytes) -> bool:
        self.delivered.append((channel, message))
        return True

    def gap(self, channel: str, reason: str) -> None:
        raise AssertionError(f"unexpected gap on {channel!r}: {reason}")

    def reject(self, channel: str, reason: str) -> None:
        raise AssertionError(f"unexpected rejection on {channel!r}: {reason}")

    def measure(self, name: str, value: float) -> None:
        pass

    def keep_secret(self, secret: str) -> None:
        pass

    def lost(self, reason: str | BaseException) -> None:
        self.losses.append(reason)


async def _until(predicate: Any, timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


@pytest.mark.postgres
async def test_plain_asyncpg_dispatch_still_delivers_everything(pg_url, channel):
    """On a plain asyncpg connection (the fallback), add_listener callbacks deliver in order."""
    config = PostgresConfig.parse(BackboneURL.parse(pg_url), {})
    listener = await open_connection(config, "listen")
    assert type(listener) is asyncpg.Connection
    link = RecordingLink()
    connection = PostgresConnection(config, link, listener)
    try:
        await connection.subscribe([channel])
        await connection.publisher.publish(channel, "x" * 20_000)
        await connection.publisher.publish(channel, b"\x00bytes")
        await connection.publisher.publish(channel, "small")
        await _until(lambda: len(link.delivered) == 3)
        await connection.probe()
    finally:
        await connection.close()
    assert link.delivered == [(channel, "x" * 20_000), (channel, b"\x00bytes"), (channel, "small")]
    assert link.losses == []  # a deliberate close is not a loss


@pytest.mark.postgres
async def test_a_killed_listening_session_is_reported_once_as_lost(pg_url, app_name, channel):
    """pg_terminate_backend: link.lost with a reason; the probe then fails (typed)."""
    link = RecordingLink()
    connection = await PostgresConnection.open(BackboneURL.parse(pg_url), {}, link)
    try:
        await connection.subscribe([channel])
        assert await terminate_pg_backends(application_name=f"{app_name}/listen") == 1
        await _until(lambda: link.losses)
        assert "listening session" in str(link.losses[0])
        with pytest.raises(ConnectionError):
            await connection.probe()
    finally:
        await connection.close()
    assert len(link.losses) == 1


@pytest.mark.postgres
async def test_a_batch_of_channels_is_one_listen_round_trip(pg_url, channel):
    """200 channels in one subscribe: one multi-statement LISTEN, every channel listened to."""
    link = RecordingLink()
    connection = await PostgresConnection.open(BackboneURL.parse(pg_url), {}, link)
    listener = connection._listener
    statements: list[str] = []
    execute = listener.execute

    async def counting(query: str, *args: Any, **kwargs: Any) -> Any:
        statements.append(query)
        return await execute(query, *args, **kwargs)

    listener.execute = counting
    names = [f"{channel}-{i}" for i in range(200)]
    try:
        await connection.subscribe(names)
        assert len(statements) == 1
        rows = await listener.fetch("SELECT c FROM pg_listening_channels() c")
        assert {row["c"] for row in rows} == set(names)
        await connection.publisher.publish(names[-1], "to the last one")
        await _until(lambda: link.delivered)
        assert link.delivered == [(names[-1], "to the last one")]
        await connection.unsubscribe(names[:100])
        rows = await listener.fetch("SELECT c FROM pg_listening_channels() c")
        assert {row["c"] for row in rows} == set(names[100:])
    finally:
        await connection.close()


@pytest.mark.postgres
async def test_concurrent_subscribes_share_listen_round_trips(pg_url, channel, monkeypatch):
    """200 subscribes entered at once through Broadcast: a handful of plugin calls (the core
    sends those that arrive together in one), every channel listened to and delivering."""
    calls: list[int] = []
    subscribe = PostgresConnection.subscribe

    async def counted(self: PostgresConnection, channels: Any) -> None:
        calls.append(len(channels))
        await subscribe(self, channels)

    monkeypatch.setattr(PostgresConnection, "subscribe", counted)
    names = [f"{channel}-{i}" for i in range(200)]
    async with Broadcast(pg_url) as broadcast, AsyncExitStack() as stack:
        async with anyio.create_task_group() as tasks:
            for name in names:
                tasks.start_soon(stack.enter_async_context, broadcast.subscribe(name))
        assert sum(calls) == len(names)
        assert 1 <= len(calls) <= 5, calls
        listener = broadcast._hub.connection._listener
        rows = await listener.fetch("SELECT c FROM pg_listening_channels() c")
        assert {row["c"] for row in rows} == set(names)
