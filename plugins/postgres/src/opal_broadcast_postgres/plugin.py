"""The ``postgres://`` / ``postgresql://`` backbone's declaration (the ``opal_broadcast`` entry point).

Imports no driver: asyncpg is imported when the first connection opens, so a missing or broken
asyncpg cannot break the discovery of other backbones.
"""

from __future__ import annotations

from opal_broadcast.plugin import CONTRACT_VERSION, BackboneInfo, hookimpl

from ._connection import PostgresConnection

__all__ = ["opal_broadcast_backbone"]


@hookimpl
def opal_broadcast_backbone() -> BackboneInfo:
    return BackboneInfo(
        # The +asyncpg forms are what OPAL users paste from SQLAlchemy settings: the same driver.
        schemes=("postgres", "postgresql", "postgres+asyncpg", "postgresql+asyncpg"),
        contract=CONTRACT_VERSION,
        connection=PostgresConnection,
        async_libraries=("asyncio",),
        capabilities=frozenset({"batch_subscribe"}),
        summary="PostgreSQL LISTEN/NOTIFY (asyncpg), messages of any size up to a cap",
        distribution="opal-broadcast-postgres",
    )
