"""The ``redis://``, ``rediss://`` and ``unix://`` backbone's declaration, found through the
``opal_broadcast`` entry point.

Importing this module imports no driver: redis-py is imported by ``RedisConnection.open``, so a
missing or broken redis-py cannot break the discovery of other backbones.
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
        summary="Redis pub/sub on redis-py asyncio (TLS, ACL users, unix sockets)",
        distribution="opal-broadcast-redis",
    )
