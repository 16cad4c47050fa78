"""The ``redis://``, ``rediss://`` and ``unix://`` backbone's declaration, found through the
``opal_broadcast`` entry point.

The plugin speaks RESP itself (no client library); importing this module imports nothing but the
plugin, and hiredis, when installed, is imported by the first connection.
"""

from __future__ import annotations

from opal_broadcast.plugin import CONTRACT_VERSION, BackboneInfo, hookimpl

from ._connection import RedisConnection

__all__ = ["opal_broadcast_backbone"]


@hookimpl
def opal_broadcast_backbone() -> BackboneInfo:
    return BackboneInfo(
        schemes=("redis", "rediss", "unix"),
        contract=CONTRACT_VERSION,
        connection=RedisConnection,
        async_libraries=("asyncio",),
        capabilities=frozenset({"batch_subscribe"}),
        summary="Redis pub/sub, RESP on asyncio, hiredis when installed (TLS, ACL users, unix)",
        distribution="opal-broadcast-redis",
    )
