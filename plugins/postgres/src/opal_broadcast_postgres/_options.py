"""Turn a ``postgres://`` URL and its options into asyncpg connection settings, before any I/O.

asyncpg reads a few query keys of a DSN itself and sends every other one to the server as a
session setting, which the server refuses at login (``keepalives=1`` included, although libpq
users put it in their URLs). So the query string and the keyword options share one declaration
(:data:`OPTIONS`): asyncpg's own keys are passed through in the DSN, libpq's TCP keys are applied
to the socket here, and anything else is an :class:`InvalidOption` naming the closest accepted one.

The password stays in the URL's userinfo, which the core masks everywhere; it is handed to asyncpg
as a keyword, never inside a DSN string. A password in the query string is refused, since query
values are not masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from opal_broadcast.plugin import BackboneURL, InvalidOption, InvalidURL, Option, Options

__all__ = [
    "DEFAULT_APPLICATION_NAME",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_POOL_SIZE",
    "OPTIONS",
    "POOL_SIZE_ENV",
    "Keepalive",
    "PostgresConfig",
]

#: Read for the default ``pool_size``, as permit-broadcaster (OPAL's broadcaster) does.
POOL_SIZE_ENV = "BROADCASTER_PG_MAX_POOL_SIZE"
DEFAULT_POOL_SIZE = 4
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
#: 256 MiB: beyond this one message would hold a good part of Postgres' notification queue.
MAX_MESSAGE_SIZE_LIMIT = 256 * 1024 * 1024
DEFAULT_APPLICATION_NAME = "opal-broadcast"

#: asyncpg's own query keys (``connect_utils._parse_connect_dsn_and_args``) besides the two
#: choices below: written into the DSN as text, so a keyword may be a number or a ``Path``.
_DSN_TEXT = (
    *("host", "port", "user", "dbname", "database", "passfile", "service", "krbsrvname"),
    *("gsslib", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslnegotiation"),
    *("ssl_min_protocol_version", "ssl_max_protocol_version"),
)
#: Every option that goes into the DSN handed to asyncpg.
PASSTHROUGH = ("sslmode", "target_session_attrs", *_DSN_TEXT)


def _settings(value: object) -> dict[str, str]:
    if value is not None and not (
        isinstance(value, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    ):
        raise ValueError("a dict of str to str (Postgres session settings)")
    return dict(value or {})


OPTIONS = Options(
    Option.choice("sslmode", ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")),
    Option.choice(
        "target_session_attrs",
        ("any", "primary", "standby", "prefer-standby", "read-write", "read-only"),
    ),
    *(Option(name, str) for name in _DSN_TEXT),
    # libpq's TCP keys: asyncpg would send them to the server, so they are set on the socket.
    Option.integer("keepalives", default=1, minimum=0, maximum=1),
    Option.integer("keepalives_idle", default=30, minimum=1),
    Option.integer("keepalives_interval", default=10, minimum=1),
    Option.integer("keepalives_count", default=3, minimum=1),
    Option.integer("tcp_user_timeout", default=0, minimum=0),  # milliseconds
    Option.text("application_name"),
    Option.duration("connect_timeout", default=10.0, minimum=0.001),
    Option.integer(
        "pool_size", default=DEFAULT_POOL_SIZE, minimum=1, maximum=100, env=POOL_SIZE_ENV
    ),
    Option.integer(
        "max_message_size",
        default=DEFAULT_MAX_MESSAGE_SIZE,
        minimum=8000,
        maximum=MAX_MESSAGE_SIZE_LIMIT,
    ),
    Option.value("ssl"),  # an ssl.SSLContext, or anything asyncpg takes
    Option.value("server_settings", _settings),
)


@dataclass(frozen=True)
class Keepalive:
    """libpq-style TCP keepalive settings for every connection (``enabled=False``: kernel off)."""

    enabled: bool = True
    idle: int = 30
    interval: int = 10
    count: int = 3
    #: ``TCP_USER_TIMEOUT`` in milliseconds (0: the kernel's default).
    user_timeout: int = 0


@dataclass(frozen=True, repr=False)
class PostgresConfig:
    """Where and how to connect, parsed and checked. ``repr`` shows no secret."""

    url: BackboneURL
    #: A DSN without credentials (asyncpg reads hosts, database and its query keys from it).
    dsn: str
    user: str | None
    password: str | None = field(compare=False)
    application_name: str
    connect_timeout: float
    pool_size: int
    max_message_size: int
    keepalive: Keepalive
    ssl: Any = None
    server_settings: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(
        cls,
        url: BackboneURL,
        options: Mapping[str, object],
        environ: Mapping[str, str] | None = None,
    ) -> PostgresConfig:
        """Check ``url`` and ``options``; raise ``InvalidURL``/``InvalidOption`` when wrong."""
        for name in ("password", "sslpassword"):
            if name in url.options or name in options:
                # Not naming the URL: its query string, and so the secret, would be shown.
                instead = (
                    "Put the password in the userinfo (postgres://user:PASSWORD@host/db), in a "
                    "passfile (?passfile=...), or in the PGPASSWORD environment variable."
                    if name == "password"
                    else "Load the encrypted key into an ssl.SSLContext and pass it as "
                    "Broadcast(url, ssl=context)."
                )
                raise InvalidOption(
                    f"The {url.scheme}:// URL has a {name!r} option, which would not be masked "
                    f"in logs. {instead}"
                )
        if url.fragment:
            raise InvalidURL(f"{url} has a '#' fragment; a postgres:// URL takes none.")
        values = OPTIONS.parse(url, options, environ)
        server_settings = values["server_settings"] or {}
        query = urlencode({name: values[name] for name in PASSTHROUGH if values[name] is not None})
        return cls(
            url=url,
            dsn=f"postgresql://{url.hostlist}{url.path}" + (f"?{query}" if query else ""),
            user=url.username,
            password=url.password,
            application_name=values["application_name"]
            or server_settings.pop("application_name", "")
            or DEFAULT_APPLICATION_NAME,
            connect_timeout=values["connect_timeout"],
            pool_size=values["pool_size"],
            max_message_size=values["max_message_size"],
            keepalive=Keepalive(
                enabled=bool(values["keepalives"]),
                idle=values["keepalives_idle"],
                interval=values["keepalives_interval"],
                count=values["keepalives_count"],
                user_timeout=values["tcp_user_timeout"],
            ),
            ssl=values["ssl"],
            server_settings=server_settings,
        )

    def connect_kwargs(self, role: str) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect`` (the password included: never log them).

        ``role`` ("listen" or "publish") is appended to the application name, so the sessions
        can be told apart in ``pg_stat_activity``.
        """
        kwargs: dict[str, Any] = {
            "timeout": self.connect_timeout,
            "server_settings": {
                **self.server_settings,
                "application_name": f"{self.application_name}/{role}",
            },
        }
        if self.user is not None:
            kwargs["user"] = self.user
        if self.password is not None:
            kwargs["password"] = self.password
        if self.ssl is not None:
            kwargs["ssl"] = self.ssl
        return kwargs

    def __repr__(self) -> str:
        return f"PostgresConfig({self.url!r}, pool_size={self.pool_size})"
