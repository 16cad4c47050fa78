"""Open one asyncpg connection: typed errors without secrets, libpq-style TCP keepalive applied.

asyncpg is imported here, lazily, so that a missing or broken driver cannot break the discovery
of other backbones.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from typing import Any

from opal_broadcast import (
    AuthenticationFailed,
    BackboneError,
    BackboneUnavailable,
    ConfigurationError,
    InvalidOption,
)

from ._fences.transport import client_socket
from ._options import Keepalive, PostgresConfig

__all__ = ["CLOSE_TIMEOUT", "close_quietly", "import_asyncpg", "open_connection", "unavailable"]

logger = logging.getLogger("opal_broadcast.postgres")

#: Give up closing a session politely after this many seconds and drop its socket.
CLOSE_TIMEOUT = 1.0


def import_asyncpg() -> Any:
    """The asyncpg module, or a :class:`ConfigurationError` saying how to install it."""
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigurationError(
            f"The postgres:// backbone needs asyncpg, which failed to import ({exc}). "
            "Install it: pip install opal-broadcast-postgres (or pip install asyncpg)."
        ) from exc
    return asyncpg


async def open_connection(config: PostgresConfig, role: str, **kwargs: Any) -> Any:
    """A new asyncpg connection named ``<application_name>/<role>``; typed errors on failure."""
    asyncpg = import_asyncpg()
    url = config.url
    try:
        connection = await asyncpg.connect(config.dsn, **config.connect_kwargs(role), **kwargs)
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        who = f"role {config.user!r}" if config.user else "the login"
        raise AuthenticationFailed(
            url.redact(
                f"{url} refused {who}: {exc}. Check the user name and password (in the URL's "
                "userinfo, a passfile or PGPASSWORD) and that pg_hba.conf admits this login "
                "(for example over TLS: sslmode=require)."
            )
        ) from exc
    except asyncpg.InvalidCatalogNameError as exc:
        raise ConfigurationError(
            url.redact(f"{url}: {exc}. Check the database name in the URL's path.")
        ) from exc
    except asyncpg.ClientConfigurationError as exc:
        raise InvalidOption(url.redact(f"{url}: {exc}.")) from exc
    except (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
        hint = ""
        if isinstance(exc, ssl.SSLError):
            hint = " Check sslmode, sslrootcert (the CA that signed the server's certificate), "
            hint += "and that the host name matches the certificate."
        raise unavailable(config, exc, f"Could not connect to {url}", hint) from exc
    except (asyncpg.TooManyConnectionsError, asyncpg.CannotConnectNowError) as exc:
        raise unavailable(config, exc, f"{url} refused a new connection") from exc
    except asyncpg.PostgresError as exc:
        raise BackboneError(url.redact(f"Could not log in to {url}: {exc}")) from exc
    _apply_keepalive(connection, config.keepalive)
    return connection


async def close_quietly(connection: Any) -> None:
    """Say goodbye to the server (within CLOSE_TIMEOUT); on any failure asyncpg drops the socket."""
    with contextlib.suppress(Exception):  # asyncpg aborts the connection itself when close fails
        await connection.close(timeout=CLOSE_TIMEOUT)


def unavailable(
    config: PostgresConfig, exc: BaseException, what: str, hint: str = ""
) -> BackboneUnavailable:
    """A :class:`BackboneUnavailable` for ``exc`` with the password masked."""
    detail = str(exc) or type(exc).__name__
    return BackboneUnavailable(config.url.redact(f"{what}: {type(exc).__name__}: {detail}.{hint}"))


def _apply_keepalive(connection: Any, keepalive: Keepalive) -> None:
    """Set TCP keepalive (and TCP_USER_TIMEOUT) on the connection's socket, as libpq would.

    asyncpg offers no option for it: the socket is reached through a fenced internal (see
    ``_fences.transport``). A Unix socket, or a platform without an option, is left as is.
    """
    sock = client_socket(connection)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(keepalive.enabled))
        if keepalive.enabled:
            for name, value in (
                ("TCP_KEEPIDLE", keepalive.idle),
                ("TCP_KEEPINTVL", keepalive.interval),
                ("TCP_KEEPCNT", keepalive.count),
            ):
                option = getattr(socket, name, None)
                if option is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, option, value)
        user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
        if keepalive.user_timeout and user_timeout is not None:
            sock.setsockopt(socket.IPPROTO_TCP, user_timeout, keepalive.user_timeout)
    except OSError as exc:
        logger.warning("could not set TCP keepalive on a Postgres connection: %s", exc)
