"""Opening one Redis connection: its transport, then the RESP2 handshake, as one pipelined write.

``AUTH`` (password-only or ACL user), ``CLIENT SETNAME``, ``CLIENT SETINFO`` (Redis 7.2+: the
library's name and version in ``CLIENT LIST``; an older server's refusal is ignored), ``SELECT``,
and a ``PING`` that ends it. The replies are checked in order, so the first refusal is the error:
a wrong password is ``AuthenticationFailed`` (and the commands after it, refused for want of a
login, say nothing more). The plugin speaks RESP itself from the first byte: no client library's
reconnection or retry logic ever runs on these connections, so every loss is reported.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from opal_broadcast.plugin import BackboneUnavailable

from ._errors import check_reply, connect_error, unreachable
from ._options import RedisConfig
from ._resp import ErrorReply, command
from ._transport import open_transport
from ._wire import Wire

__all__ = ["open_wire"]


async def open_wire(
    config: RedisConfig,
    label: str,
    on_lost: Callable[[str], None],
    on_message: Callable[[bytes, bytes], None] | None = None,
) -> Wire:
    """A connected, authenticated wire; a typed error (secrets masked) if not."""
    wire = Wire(f"{label} connection to {config.url}", on_lost, on_message)
    try:
        await open_transport(config, wire)
    except BaseException as exc:
        wire.close()
        if isinstance(exc, (OSError, ssl.SSLError)):
            raise connect_error(config, exc) from None
        raise
    try:
        replies = [(doing, wire.request(data)) for doing, data in _handshake(config)]
        for doing, reply in replies:
            answer = await reply
            if doing == "CLIENT SETINFO" and isinstance(answer, ErrorReply):
                continue  # Redis < 7.2 has no SETINFO
            check_reply(config, answer, doing)
    except BaseException as exc:
        wire.close()
        if wire.broken is not None and isinstance(exc, BackboneUnavailable):
            raise unreachable(config, config.redact(wire.broken)) from None
        raise
    return wire


def _handshake(config: RedisConfig) -> list[tuple[str, bytes]]:
    kwargs = config.connection_kwargs
    steps: list[tuple[str, bytes]] = []
    password = kwargs.get("password")
    if password is not None:
        username = kwargs.get("username")
        credentials = (username.encode(),) if username is not None else ()
        steps.append(("AUTH", command(b"AUTH", *credentials, password.encode())))
    if kwargs.get("client_name"):
        steps.append(
            ("CLIENT SETNAME", command(b"CLIENT", b"SETNAME", kwargs["client_name"].encode()))
        )
    steps.extend(("CLIENT SETINFO", data) for data in _setinfo())
    if kwargs.get("db"):
        steps.append(("SELECT", command(b"SELECT", str(kwargs["db"]).encode())))
    steps.append(("PING", command(b"PING")))
    return steps


def _setinfo() -> tuple[bytes, bytes]:
    from . import __version__

    return (
        command(b"CLIENT", b"SETINFO", b"LIB-NAME", b"opal-broadcast-redis"),
        command(b"CLIENT", b"SETINFO", b"LIB-VER", __version__.encode()),
    )
