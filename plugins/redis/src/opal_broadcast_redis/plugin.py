"""The ``redis://``, ``rediss://`` and ``unix://`` backbone: the hooks the core calls.

Found through the ``opal_broadcast`` entry point. Importing this module imports no driver:
redis-py is imported on the first connect, so a missing or broken redis-py cannot break the
discovery of other backbones.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from opal_broadcast import BackboneInfo, BackboneLink, BackboneURL, hookimpl

from ._connection import RedisConnection
from ._options import RedisConfig

__all__ = [
    "opal_broadcast_backbone",
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
        schemes=("redis", "rediss", "unix"),
        async_libraries=("asyncio",),
        summary="Redis pub/sub on redis-py asyncio (TLS, ACL users, unix sockets)",
    )


@hookimpl
async def opal_broadcast_connect(
    url: BackboneURL, options: dict[str, Any], link: BackboneLink
) -> RedisConnection:
    config = RedisConfig.parse(url, options)
    try:
        import redis.asyncio  # noqa: F401 - a clear error now rather than deep in connect
    except ImportError as exc:
        from opal_broadcast import ConfigurationError

        raise ConfigurationError(
            f"The {url.scheme}:// backbone needs redis-py: pip install opal-broadcast-redis "
            f"(or pip install 'redis>=4.3.4'). Import failed: {exc}"
        ) from exc
    connection = RedisConnection(config, link)
    await connection.open()
    return connection


@hookimpl
async def opal_broadcast_disconnect(connection: RedisConnection) -> None:
    connection.close()


@hookimpl
def opal_broadcast_publish(
    connection: RedisConnection, channel: str, message: str | bytes
) -> Awaitable[None]:
    return connection.publish(channel, message)


@hookimpl
def opal_broadcast_subscribe(connection: RedisConnection, channel: str) -> Awaitable[None]:
    return connection.subscribe(channel)


@hookimpl
def opal_broadcast_unsubscribe(connection: RedisConnection, channel: str) -> Awaitable[None]:
    return connection.unsubscribe(channel)


@hookimpl
def opal_broadcast_probe(connection: RedisConnection) -> Awaitable[None]:
    return connection.probe()
