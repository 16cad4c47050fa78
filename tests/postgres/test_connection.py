"""The plugin's connection object on its own, with a link that records what it reports."""

from __future__ import annotations

from typing import Any

import anyio
import asyncpg
import pytest

from opal_broadcast import BackboneURL
from opal_broadcast_postgres._connect import open_connection
from opal_broadcast_postgres._connection import PostgresConnection, _listening_class
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

    def keep_secret(self, secret: str) -> None:
        pass

    def lost(self, reason: str | BaseException) -> None:
        self.losses.append(reason)


async def _until(predicate: Any, timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


def test_the_fast_path_overrides_a_method_asyncpg_still_has():
    """The listening class overrides asyncpg's per-notification method (else: the slow path)."""
    assert "_process_notification" in vars(asyncpg.Connection)
    assert "_process_notification" in vars(_listening_class())
    assert issubclass(_listening_class(), asyncpg.Connection)


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
