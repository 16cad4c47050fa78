"""The ``nats://`` backbone's hooks: the module the ``opal_broadcast`` entry point names.

This module imports no driver. nats-py is imported (through ``._connection``) inside
:func:`opal_broadcast_connect`, when the first connection opens, so a missing or broken nats-py
cannot break the discovery of other backbones. Everything that needs no server (the URL, the
options, the channel names) is checked here, before any I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opal_broadcast import (
    BackboneInfo,
    BackboneLink,
    BackboneURL,
    InvalidChannel,
    InvalidOption,
    InvalidURL,
    PluginLoadError,
    hookimpl,
    take_options,
)

if TYPE_CHECKING:
    from ._connection import NatsConnection

__all__ = [
    "MAX_SUBJECT_BYTES",
    "OPTIONS",
    "Settings",
    "check_subject",
    "settings_for",
]

DEFAULT_PORT = 4222
#: Options accepted in the URL's query string or as ``Broadcast(url, **options)``. None may share
#: a name with a keyword of ``Broadcast`` (``connect_timeout``, ...): the core takes those itself.
OPTIONS = ("name", "server_timeout")
#: Far below the server's 4 KB control-line limit, which closes the connection when exceeded.
MAX_SUBJECT_BYTES = 1024
_RESERVED = frozenset("*>")


@dataclass(frozen=True)
class Settings:
    """What the driver needs besides the credentials, which stay in the URL (masked in reprs)."""

    servers: list[str]
    name: str | None = None
    server_timeout: int = 2  # seconds per server for TCP connect and handshake (nats-py's unit)


@hookimpl
def opal_broadcast_backbone() -> BackboneInfo:
    return BackboneInfo(
        schemes=("nats",),
        async_libraries=("asyncio",),  # nats-py is an asyncio client
        summary="NATS core pub/sub (nats-py), at most once",
    )


@hookimpl
async def opal_broadcast_connect(
    url: BackboneURL, options: dict[str, Any], link: BackboneLink
) -> NatsConnection:
    settings = settings_for(url, options)
    try:
        from ._connection import NatsConnection
    except ImportError as exc:
        raise PluginLoadError(
            f"The nats:// backbone needs nats-py, which failed to import ({exc}). "
            "Reinstall it: pip install --force-reinstall opal-broadcast-nats"
        ) from exc
    return await NatsConnection.open(url, settings, link)


@hookimpl
async def opal_broadcast_disconnect(connection: NatsConnection) -> None:
    await connection.close()


@hookimpl
def opal_broadcast_check_channel(url: BackboneURL, options: dict[str, Any], channel: str) -> None:
    check_subject(channel)


@hookimpl
async def opal_broadcast_publish(
    connection: NatsConnection, channel: str, message: str | bytes
) -> None:
    check_subject(channel)
    await connection.publish(channel, message.encode() if isinstance(message, str) else message)


@hookimpl
async def opal_broadcast_subscribe(connection: NatsConnection, channel: str) -> None:
    check_subject(channel)
    await connection.subscribe(channel)


@hookimpl
async def opal_broadcast_unsubscribe(connection: NatsConnection, channel: str) -> None:
    await connection.unsubscribe(channel)


@hookimpl
async def opal_broadcast_probe(connection: NatsConnection) -> None:
    await connection.round_trip()


def settings_for(url: BackboneURL, options: dict[str, Any]) -> Settings:
    """Check the URL and options (no I/O) and turn them into driver settings."""
    if url.path not in ("", "/") or url.fragment:
        raise InvalidURL(
            f"{url} has a path or fragment, which nats:// URLs do not use: "
            "write nats://[user:password@]host[:port][,host2[:port]][?name=...]."
        )
    servers = [_server(h.host, h.port) for h in url.hosts] or [_server("", None)]
    chosen = take_options(url, OPTIONS, options)
    name = chosen.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidOption(f"The nats:// option 'name' must be a str, not {type(name).__name__}.")
    return Settings(servers, name, _whole_seconds(chosen.get("server_timeout", 2)))


def check_subject(channel: str) -> None:
    """Refuse a channel name that is not a literal NATS subject (one the server would misread)."""
    problem = None
    if len(channel.encode()) > MAX_SUBJECT_BYTES:
        problem = f"it is longer than {MAX_SUBJECT_BYTES} bytes"
    elif any(c.isspace() or not c.isprintable() for c in channel):
        problem = "it contains whitespace or control characters"
    elif _RESERVED & set(channel):
        problem = "'*' and '>' are NATS wildcards"
    elif "" in channel.split("."):
        problem = "'.' separates tokens, so it may not start or end one, nor be doubled"
    if problem is not None:
        raise InvalidChannel(
            f"{channel[:80]!r} cannot be a NATS subject: {problem}. "
            "Use letters, digits and '-', '_', ':' or single dots between tokens."
        )


def _server(host: str, port: int | None) -> str:
    """One entry of nats-py's server list; no credentials in it (they go as separate arguments)."""
    host = f"[{host}]" if ":" in host else host or "localhost"
    return f"nats://{host}:{port or DEFAULT_PORT}"


def _whole_seconds(value: object) -> int:
    try:
        seconds = int(str(value))
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise InvalidOption(
            f"The nats:// option 'server_timeout' must be a whole number of seconds >= 1 "
            f"(per server, as nats-py takes it), not {value!r}."
        )
    return seconds
