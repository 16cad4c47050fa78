"""Turn a ``postgres://`` URL and its options into asyncpg connection settings, before any I/O.

asyncpg reads a few query keys of a DSN itself and sends every other one to the server as a
session setting, which the server refuses at login (``keepalives=1`` included, although libpq
users put it in their URLs). So the query string and the keyword options share one allow-list
(``take_options``): asyncpg's own keys are passed through, libpq's TCP keys are applied to the
socket here, and anything else is an :class:`InvalidOption` naming the closest accepted one.

The password stays in the URL's userinfo, which the core masks everywhere; it is handed to asyncpg
as a keyword, never inside a DSN string. A password in the query string is refused, since query
values are not masked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from opal_broadcast import BackboneURL, InvalidOption, InvalidURL, take_options

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

#: Query keys asyncpg parses itself (``connect_utils._parse_connect_dsn_and_args``).
PASSTHROUGH = (
    "host",
    "port",
    "user",
    "dbname",
    "database",
    "passfile",
    "service",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "sslnegotiation",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "target_session_attrs",
    "krbsrvname",
    "gsslib",
)
KEEPALIVE = ("keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count")
#: Options of this plugin (query string or keyword).
OWN = ("application_name", "connect_timeout", "tcp_user_timeout", "pool_size", "max_message_size")
#: Objects that only make sense as keywords of ``Broadcast(...)``.
KEYWORD_ONLY = ("ssl", "server_settings")
OPTIONS = (*PASSTHROUGH, *KEEPALIVE, *OWN, *KEYWORD_ONLY)

_SECRETS = ("password", "sslpassword")
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_TARGETS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")


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
        environ = os.environ if environ is None else environ
        for name in _SECRETS:
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
        merged = take_options(url, OPTIONS, options)
        for name in KEYWORD_ONLY:
            if name in url.options:
                raise InvalidOption(
                    f"{name!r} is a keyword option of Broadcast(...), not a query option of {url}."
                )
        passthrough = {name: _text(merged[name]) for name in PASSTHROUGH if name in merged}
        if "sslmode" in passthrough and passthrough["sslmode"] not in _SSLMODES:
            raise InvalidOption(
                f"sslmode={passthrough['sslmode']!r} is not one of {', '.join(_SSLMODES)}."
            )
        target = passthrough.get("target_session_attrs")
        if target is not None and target not in _TARGETS:
            raise InvalidOption(
                f"target_session_attrs={target!r} is not one of {', '.join(_TARGETS)}."
            )
        server_settings = dict(_settings(merged.get("server_settings")))
        application_name = _text(
            merged.get("application_name")
            or server_settings.pop("application_name", "")
            or DEFAULT_APPLICATION_NAME
        )
        query = urlencode(passthrough)
        return cls(
            url=url,
            dsn=f"postgresql://{url.hostlist}{url.path}" + (f"?{query}" if query else ""),
            user=url.username,
            password=url.password,
            application_name=application_name,
            connect_timeout=_number(merged, "connect_timeout", 10.0, low=0.001),
            pool_size=_pool_size(merged, environ),
            max_message_size=int(
                _number(
                    merged,
                    "max_message_size",
                    DEFAULT_MAX_MESSAGE_SIZE,
                    low=8000,
                    high=MAX_MESSAGE_SIZE_LIMIT,
                    integer=True,
                )
            ),
            keepalive=Keepalive(
                enabled=bool(_number(merged, "keepalives", 1, low=0, high=1, integer=True)),
                idle=int(_number(merged, "keepalives_idle", 30, low=1, integer=True)),
                interval=int(_number(merged, "keepalives_interval", 10, low=1, integer=True)),
                count=int(_number(merged, "keepalives_count", 3, low=1, integer=True)),
                user_timeout=int(_number(merged, "tcp_user_timeout", 0, low=0, integer=True)),
            ),
            ssl=merged.get("ssl"),
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


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def _settings(value: object) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidOption(
            "server_settings must be a dict of str to str (Postgres session settings)."
        )
    return value


def _number(
    merged: Mapping[str, object],
    name: str,
    default: float,
    *,
    low: float,
    high: float | None = None,
    integer: bool = False,
) -> float:
    if name not in merged:
        return default
    raw = merged[name]
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = int(_text(raw)) if integer else float(_text(raw))
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise InvalidOption(f"{name}={raw!r} is not {kind}.") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise InvalidOption(f"{name}={raw!r} is out of range: it must be {bounds}.")
    return value


def _pool_size(merged: Mapping[str, object], environ: Mapping[str, str]) -> int:
    if "pool_size" in merged:
        return int(_number(merged, "pool_size", DEFAULT_POOL_SIZE, low=1, high=100, integer=True))
    raw = environ.get(POOL_SIZE_ENV, "").strip()
    if not raw:
        return DEFAULT_POOL_SIZE
    try:
        return int(_number({POOL_SIZE_ENV: raw}, POOL_SIZE_ENV, 0, low=1, high=100, integer=True))
    except InvalidOption as exc:
        raise InvalidOption(f"The environment variable {exc}") from None
