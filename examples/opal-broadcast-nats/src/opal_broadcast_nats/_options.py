"""The ``nats://`` URL, its options and its channel names, checked before any I/O (no driver here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opal_broadcast.plugin import BackboneURL, InvalidChannel, InvalidURL, Option, Options

__all__ = ["MAX_SUBJECT_BYTES", "OPTIONS", "Settings", "check_subject", "settings_for"]

DEFAULT_PORT = 4222
#: Options accepted in the URL's query string or as ``Broadcast(url, **options)``. None may share
#: a name with a keyword of ``Broadcast`` (``connect_timeout``, ...): the core takes those itself.
OPTIONS = Options(
    Option.text("name"),
    # Seconds per server for the TCP connect and handshake: whole seconds, as nats-py takes them.
    Option.integer("server_timeout", default=2, minimum=1),
)
#: Far below the server's 4 KB control-line limit, which closes the connection when exceeded.
MAX_SUBJECT_BYTES = 1024
_RESERVED = frozenset("*>")


@dataclass(frozen=True)
class Settings:
    """What the driver needs besides the credentials, which stay in the URL (masked in reprs)."""

    servers: list[str]
    name: str | None = None
    server_timeout: int = 2  # seconds per server for TCP connect and handshake (nats-py's unit)


def settings_for(url: BackboneURL, options: Mapping[str, Any]) -> Settings:
    """Check the URL and options (no I/O) and turn them into driver settings."""
    if url.path not in ("", "/") or url.fragment:
        raise InvalidURL(
            f"{url} has a path or fragment, which nats:// URLs do not use: "
            "write nats://[user:password@]host[:port][,host2[:port]][?name=...]."
        )
    servers = [_server(h.host, h.port) for h in url.hosts] or [_server("", None)]
    values = OPTIONS.parse(url, options)
    return Settings(servers, values["name"], values["server_timeout"])


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
