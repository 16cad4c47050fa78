"""Kill a client's session on the server side, as a DBA or a failover would (async helpers)."""

from __future__ import annotations

from typing import Any

from ._postgres import urls as _pg_urls
from ._redis import urls as _redis_urls

__all__ = ["kill_redis_clients", "terminate_pg_backends"]

_TERMINATE = """
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))
FROM pg_stat_activity
WHERE pid <> pg_backend_pid()
  AND backend_type = 'client backend'
  AND ($1::text IS NULL OR application_name = $1)
  AND ($2::text IS NULL OR usename = $2)
"""


async def terminate_pg_backends(
    *, application_name: str | None = None, role: str | None = None, admin_url: str | None = None
) -> int:
    """``pg_terminate_backend()`` the sessions matching every filter given; return how many.

    Filter by ``application_name`` (set it in the client's DSN or ``server_settings``) and/or by
    ``role`` (all other sessions of that role). Waits up to 5 s for each backend to exit. Connects
    as the superuser (``postgres_admin`` URL) unless ``admin_url`` is given; the helper's own
    session is never terminated.
    """
    if application_name is None and role is None:
        raise ValueError("give application_name and/or role: refusing to terminate every session")
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(admin_url or _pg_urls()["postgres_admin"])
    try:
        count = await conn.fetchval(_TERMINATE, application_name, role)
    finally:
        await conn.close()
    return int(count)


async def close_redis_client(client: Any) -> None:
    """Close a redis-py asyncio client or PubSub, and its connections, in redis-py 4.x to 8.x.

    redis-py 5 has ``aclose()``; 4.x has ``close()``, which leaves a ``from_url`` pool open.
    """
    await (client.aclose() if hasattr(client, "aclose") else client.close())
    await client.connection_pool.disconnect()


async def kill_redis_clients(
    url: str | None = None,
    *,
    client_type: str | None = None,
    addr: str | None = None,
    user: str | None = None,
) -> int:
    """``CLIENT KILL`` with the filters given (all must match); return how many were closed.

    ``client_type`` is ``"pubsub"``, ``"normal"``, ...; ``addr`` is a client's ``ip:port`` as
    ``CLIENT INFO``/``CLIENT LIST`` shows it. ``url`` picks the server (default: plain Redis; give
    the password/ACL URL for the auth instance). The helper's own connection is skipped.
    """
    if client_type is None and addr is None and user is None:
        raise ValueError("give client_type, addr and/or user: refusing to kill every client")
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url or _redis_urls()["redis"])
    try:
        killed = await client.client_kill_filter(
            _type=client_type, addr=addr, user=user, skipme=True
        )
    finally:
        await close_redis_client(client)
    return int(killed)
