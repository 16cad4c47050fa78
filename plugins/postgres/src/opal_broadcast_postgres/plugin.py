"""The ``postgres://`` / ``postgresql://`` backbone's hooks (the ``opal_broadcast`` entry point).

Imports no driver: asyncpg is imported when the first connection opens, so a missing or broken
asyncpg cannot break the discovery of other backbones.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from opal_broadcast import BackboneInfo, BackboneLink, BackboneURL, hookimpl

if TYPE_CHECKING:
    from ._connection import PostgresConnection

__all__ = [
    "opal_broadcast_backbone",
    "opal_broadcast_check_channel",
    "opal_broadcast_check_message",
    "opal_broadcast_connect",
    "opal_broadcast_disconnect",
    "opal_broadcast_probe",
    "opal_broadcast_publish",
    "opal_broadcast_subscribe",
    "opal_broadcast_unsubscribe",
]


@hookimpl
def opal_broadcast_backbone() -> BackboneInfo:
    return BackboneInfo(
        schemes=("postgres", "postgresql"),
        async_libraries=("asyncio",),
        summary="PostgreSQL LISTEN/NOTIFY (asyncpg), messages of any size up to a cap",
    )


@hookimpl
async def opal_broadcast_connect(
    url: BackboneURL, options: dict[str, Any], link: BackboneLink
) -> PostgresConnection:
    from ._connection import PostgresConnection
    from ._options import PostgresConfig

    return await PostgresConnection.open(PostgresConfig.parse(url, options), link)


@hookimpl
def opal_broadcast_check_channel(url: BackboneURL, options: dict[str, Any], channel: str) -> None:
    from ._codec import check_channel

    check_channel(channel)


@hookimpl
def opal_broadcast_check_message(
    url: BackboneURL, options: dict[str, Any], channel: str, message: str | bytes
) -> None:
    # Only called while the server is unreachable: refuse an oversized message at once.
    from ._codec import Encoder
    from ._options import PostgresConfig

    Encoder(PostgresConfig.parse(url, options).max_message_size).encode(message)


@hookimpl
async def opal_broadcast_disconnect(connection: PostgresConnection) -> None:
    await connection.close()


@hookimpl
def opal_broadcast_publish(
    connection: PostgresConnection, channel: str, message: str | bytes
) -> Awaitable[None]:
    # Not ``async def``: the hot path saves a coroutine frame. The channel was checked already.
    return connection.publisher.publish(channel, message)


@hookimpl
def opal_broadcast_subscribe(connection: PostgresConnection, channel: str) -> Awaitable[None]:
    return connection.subscribe(channel)


@hookimpl
def opal_broadcast_unsubscribe(connection: PostgresConnection, channel: str) -> Awaitable[None]:
    return connection.unsubscribe(channel)


@hookimpl
def opal_broadcast_probe(connection: PostgresConnection) -> Awaitable[None]:
    return connection.probe()
