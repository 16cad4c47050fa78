"""The ``nats://`` backbone's declaration: the module the ``opal_broadcast`` entry point names.

Imports no driver: ``NatsConnection`` imports nats-py when the first connection opens, so a
missing or broken nats-py cannot break the discovery of other backbones.
"""

from __future__ import annotations

from opal_broadcast.plugin import CONTRACT_VERSION, BackboneInfo, hookimpl

from ._connection import NatsConnection

__all__ = ["opal_broadcast_backbone"]


@hookimpl
def opal_broadcast_backbone() -> BackboneInfo:
    return BackboneInfo(
        schemes=("nats",),
        contract=CONTRACT_VERSION,
        connection=NatsConnection,
        async_libraries=("asyncio",),  # nats-py is an asyncio client
        capabilities=frozenset({"batch_subscribe"}),
        summary="NATS core pub/sub (nats-py), at most once",
        distribution="opal-broadcast-nats",
    )
