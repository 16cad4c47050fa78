"""Opening a Kafka connection: the TLS context from the KafkaConfig, and why the clients could not
start (aiokafka says only "Unable to bootstrap"), found by connecting to each server ourselves."""

from __future__ import annotations

import asyncio
import ssl

from opal_broadcast.plugin import (
    AuthenticationFailed,
    BackboneError,
    BackboneUnavailable,
    BackboneURL,
    BroadcastError,
    InvalidOption,
)

from . import _create_conn as create_conn
from ._driver import kafka_errors, kafka_helpers
from ._errors import describe
from ._options import KafkaConfig

__all__ = ["connect_error", "ssl_context"]


def ssl_context(config: KafkaConfig, where: str) -> ssl.SSLContext | None:
    if not config.uses_tls:
        return None
    try:
        return kafka_helpers.create_ssl_context(  # type: ignore[no-any-return]
            cafile=config.ssl_cafile,
            capath=config.ssl_capath,
            certfile=config.ssl_certfile,
            keyfile=config.ssl_keyfile,
            password=config.ssl_key_password,
        )
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise InvalidOption(
            f"Could not load the TLS files for {where} ({config.redact(str(exc))}): check "
            "ssl_cafile, ssl_capath, ssl_certfile, ssl_keyfile and ssl_key_password (or the "
            "KAFKA_SSL_* variables)."
        ) from None


async def connect_error(
    url: BackboneURL, config: KafkaConfig, tls: ssl.SSLContext | None, failure: Exception
) -> BroadcastError:
    """Why the clients could not start. aiokafka says only "Unable to bootstrap" (it logs each
    server's error), so each server is tried again, once, to find the cause."""
    if not isinstance(failure, kafka_errors.KafkaConnectionError):
        return BackboneUnavailable(
            f"Could not connect to {url}: {config.redact(describe(failure))}."
        )
    try_server = _try_kafka if create_conn.check() else _try_tcp
    reasons = []
    answered = 0
    for host, port in _servers(config.bootstrap_servers):
        try:
            explained = await try_server(url, config, tls, host, port)
        except Exception as exc:
            reasons.append(f"{host}:{port}: {config.redact(describe(exc))}")
            continue
        if explained is not None:
            return explained
        answered += 1
        reasons.append(
            f"{host}:{port} accepted the connection but not the metadata request (is "
            f"security_protocol={config.security_protocol} what this listener expects?)"
        )
    hint = (
        "Check the security settings against the listeners' configuration."
        if answered
        else "Check that a broker is running and reachable from here."
    )
    return BackboneUnavailable(f"Could not connect to {url}: {'; '.join(reasons)}. {hint}")


async def _try_kafka(
    url: BackboneURL, config: KafkaConfig, tls: ssl.SSLContext | None, host: str, port: int
) -> BroadcastError | None:
    """Connect to one server as the clients do; the error that explains the failure if its
    answer gives one, else None (raises when it cannot be reached)."""
    try:
        conn = await create_conn.connect(host, port, config, tls)
    except kafka_errors.SaslAuthenticationFailed as exc:
        return AuthenticationFailed(
            f"{url} refused the credentials of user {config.username!r} (SASL "
            f"{config.sasl_mechanism}: {config.redact(str(exc))}). Check the username and "
            "password (URL userinfo, the username/password options, or KAFKA_PLAIN_USERNAME "
            "and KAFKA_PLAIN_PASSWORD) and sasl_mechanism."
        )
    except (kafka_errors.UnsupportedSaslMechanismError, kafka_errors.IllegalSaslStateError) as exc:
        return BackboneError(
            f"{url} does not accept SASL {config.sasl_mechanism} on {host}:{port} "
            f"({config.redact(str(exc))}). Check security_protocol and sasl_mechanism "
            "against the listener's configuration."
        )
    conn.close()
    return None


async def _try_tcp(
    url: BackboneURL, config: KafkaConfig, tls: ssl.SSLContext | None, host: str, port: int
) -> None:
    """The public path (see ``_create_conn``): whether one server accepts a TCP connection."""
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port), config.request_timeout_ms / 1000
    )
    writer.close()


def _servers(bootstrap_servers: list[str]) -> list[tuple[str, int]]:
    """``host:port`` and ``[v6 address]:port`` (as ``KafkaConfig`` writes them) split."""
    split = [server.rpartition(":") for server in bootstrap_servers]
    return [(host.strip("[]"), int(port)) for host, _, port in split]
