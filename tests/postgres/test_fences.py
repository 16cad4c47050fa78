"""The asyncpg internals the plugin relies on (``_fences``): found on the asyncpg installed and,
where an asyncpg lacks one or changed it, the public path, after one warning naming the version."""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import socket
from collections.abc import Callable
from typing import Any

import anyio
import asyncpg
import pytest

from opal_broadcast import Broadcast, Event
from opal_broadcast_postgres import _fences
from opal_broadcast_postgres._fences.process_notification import listening_class
from opal_broadcast_postgres._fences.transport import client_socket

pytestmark = pytest.mark.anyio


@pytest.fixture
def fence_warnings(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> Callable[[], list[str]]:
    """The fences' warnings logged during the test (each fence warns once per process)."""
    monkeypatch.setattr(_fences, "_warned", set())
    caplog.set_level(logging.WARNING, logger="opal_broadcast.postgres")
    prefix = f"asyncpg {importlib.metadata.version('asyncpg')} has no "
    return lambda: [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]


async def _round_trip(broadcast: Broadcast, channel: str) -> None:
    """A publish on ``channel`` reaches a subscriber of it."""
    async with broadcast.subscribe(channel) as subscriber:
        await broadcast.publish(channel, "through the public path")
        with anyio.fail_after(10):
            assert await subscriber.get() == Event(channel, "through the public path")


def test_the_notification_hook_is_found_and_overridden(fence_warnings):
    """asyncpg still has Connection._process_notification(pid, channel, payload): overridden."""
    overriding = listening_class()
    assert overriding is not asyncpg.Connection
    assert issubclass(overriding, asyncpg.Connection)
    assert "_process_notification" in vars(asyncpg.Connection)
    assert "_process_notification" in vars(overriding)
    assert fence_warnings() == []


def test_without_the_notification_hook_the_listening_class_is_asyncpgs(monkeypatch, fence_warnings):
    """Connection._process_notification gone: plain asyncpg.Connection, one warning in all."""
    monkeypatch.delattr(asyncpg.Connection, "_process_notification")
    assert listening_class() is asyncpg.Connection
    assert listening_class() is asyncpg.Connection
    [warning] = fence_warnings()
    assert "Connection._process_notification(pid, channel, payload)" in warning
    assert "add_listener" in warning


@pytest.mark.postgres
async def test_a_changed_notification_hook_delivers_through_add_listener(
    pg_url, channel, monkeypatch, fence_warnings
):
    """Connection._process_notification with other arguments: a plain connection and
    add_listener LISTEN, deliver and UNLISTEN; two sessions opened, one warning."""
    original = asyncpg.Connection._process_notification

    def changed(self: Any, *args: Any) -> None:  # still serves asyncpg's protocol
        original(self, *args)

    changed.__signature__ = inspect.signature(lambda self, notification: None)  # type: ignore[attr-defined]
    monkeypatch.setattr(asyncpg.Connection, "_process_notification", changed)
    async with Broadcast(pg_url, share_connection=False) as broadcast:
        listener = broadcast._hub.connection._listener
        assert type(listener) is asyncpg.Connection
        async with broadcast.subscribe(channel + "-kept"):
            await _round_trip(broadcast, channel)
            rows = await listener.fetch("SELECT c FROM pg_listening_channels() c")
            assert [row["c"] for row in rows] == [channel + "-kept"]
    async with Broadcast(pg_url, share_connection=False) as broadcast:
        await _round_trip(broadcast, channel)
    assert len(fence_warnings()) == 1


@pytest.mark.postgres
async def test_the_transport_gives_the_tcp_socket(postgres_url, fence_warnings):
    """asyncpg still keeps its transport in Connection._transport: the socket is reached."""
    connection = await asyncpg.connect(postgres_url)
    try:
        sock = client_socket(connection)
        assert sock is not None
        assert sock.family in (socket.AF_INET, socket.AF_INET6)
    finally:
        await connection.close()
    assert fence_warnings() == []


@pytest.mark.postgres
async def test_without_the_transport_publish_and_delivery_work(
    pg_url, channel, monkeypatch, fence_warnings
):
    """Connection._transport gone: sockets without keepalive, publish and delivery unchanged,
    one warning for the listening and the publishing sessions together."""

    def gone(_self: Any) -> None:
        raise AttributeError("_transport")

    monkeypatch.setattr(asyncpg.Connection, "_transport", property(gone, lambda *_: None))
    async with Broadcast(pg_url, share_connection=False) as broadcast:
        await _round_trip(broadcast, channel)
    [warning] = fence_warnings()
    assert "Connection._transport" in warning
    assert "keepalive" in warning
