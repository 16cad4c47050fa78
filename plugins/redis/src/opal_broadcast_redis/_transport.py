"""Opening one connection's transport: TCP, a unix socket, or TLS with certificate checks.

The transport's protocol is the :class:`~._wire.Wire` from the first byte: nothing else ever reads
from it. A TLS handshake that stalls is checked against the port speaking plain RESP: a plaintext
Redis reads a TLS ClientHello as the start of an inline command and waits for a newline that may
never come, so the handshake would only end at the core's connect timeout.
"""

from __future__ import annotations

import asyncio
import ssl

from opal_broadcast.plugin import BackboneUnavailable, InvalidOption

from ._options import RedisConfig
from ._wire import Wire

__all__ = ["open_transport", "tls_context"]

#: How long a TLS handshake may take before the port is checked for plain RESP.
TLS_SUSPICION = 1.0
_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


async def open_transport(config: RedisConfig, wire: Wire) -> None:
    """Connect ``wire`` to the server; raise ``OSError``/``ssl.SSLError`` (or typed) if not."""
    loop = asyncio.get_running_loop()
    kwargs = config.connection_kwargs
    if config.unix:
        await loop.create_unix_connection(lambda: wire, kwargs["path"])
        return
    host, port = kwargs["host"], kwargs["port"]
    if not config.tls:
        await loop.create_connection(lambda: wire, host, port)
        return
    attempt = asyncio.ensure_future(
        loop.create_connection(lambda: wire, host, port, ssl=tls_context(config))
    )
    try:
        await asyncio.wait({attempt}, timeout=TLS_SUSPICION)
        if not attempt.done() and await _answers_plaintext(host, port):
            raise BackboneUnavailable(
                f"{config.url}: port {port} answers in plain RESP, not TLS. Use redis:// for it, "
                "or the port where the server speaks TLS."
            )
        await attempt
    finally:
        if not attempt.done():
            attempt.cancel()  # a transport it still makes is the wire's: wire.close() ends it


def tls_context(config: RedisConfig) -> ssl.SSLContext:
    """The TLS settings of a ``rediss://`` URL: verified against the CA (or the system's)."""
    kwargs = config.connection_kwargs
    try:
        context = ssl.create_default_context(cafile=kwargs.get("ssl_ca_certs"))
        if "ssl_certfile" in kwargs:
            context.load_cert_chain(kwargs["ssl_certfile"], kwargs.get("ssl_keyfile"))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidOption(
            f"Could not load the TLS files of {config.url} ({exc}): check ssl_ca_certs, "
            "ssl_certfile and ssl_keyfile."
        ) from None
    verify = _CERT_REQS[kwargs.get("ssl_cert_reqs", "required")]
    context.check_hostname = verify != ssl.CERT_NONE and kwargs.get("ssl_check_hostname", True)
    context.verify_mode = verify
    return context


async def _answers_plaintext(host: str, port: int) -> bool:
    """Whether ``host:port`` answers a plain-text ``PING`` the way Redis does (within 1 s)."""

    async def ping() -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"PING\r\n")
            return await reader.read(64)
        finally:
            writer.transport.abort()

    try:
        answer = await asyncio.wait_for(ping(), 1.0)
    except (OSError, asyncio.TimeoutError):
        return False
    return answer[:1] in (b"+", b"-")
