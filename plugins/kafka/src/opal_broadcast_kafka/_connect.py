"""Opening a Kafka connection: the TLS context from the KafkaConfig, and why the clients could not
start (aiokafka says only "Unable to bootstrap"), found by connecting to each broker ourselves."""

from __future__ import annotations

import ssl

from opal_broadcast.plugin import (
    AuthenticationFailed,
    BackboneError,
    BackboneUnavailable,
    BackboneURL,
    BroadcastError,
    InvalidOption,
    lazy_import,
)

from ._options import KafkaConfig

__all__ = ["connect_error", "ssl_context"]

_DIST = "opal-broadcast-kafka"
kafka_errors = lazy_import("aiokafka.errors", distribution=_DIST)
aiokafka_conn = lazy_import("aiokafka.conn", distribution=_DIST)
aiokafka_helpers = lazy_import("aiokafka.helpers", distribution=_DIST)
cluster = lazy_import("opal_broadcast_kafka._cluster", distribution=_DIST)


def ssl_context(config: KafkaConfig, where: str) -> ssl.SSLContext | None:
    if not config.uses_tls:
        return None
    try:
        return aiokafka_helpers.create_ssl_context(  # type: ignore[no-any-return]
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
        detail = config.redact(cluster.describe(failure))
        return BackboneUnavailable(f"Could not connect to {url}: {detail}.")
    reasons = []
    answered = 0
    for host, port, _family in aiokafka_conn.collect_hosts(
        config.bootstrap_servers, randomize=False
    ):
        try:
            conn = await aiokafka_conn.create_conn(
                host,
                port,
                client_id=config.client_id,
                request_timeout_ms=config.request_timeout_ms,
                ssl_context=tls,
                security_protocol=config.security_protocol,
                sasl_mechanism=config.sasl_mechanism,
                sasl_plain_username=config.username,
                sasl_plain_password=config.password,
            )
        except kafka_errors.SaslAuthenticationFailed as exc:
            return AuthenticationFailed(
                f"{url} refused the credentials of user {config.username!r} (SASL "
                f"{config.sasl_mechanism}: {config.redact(str(exc))}). Check the username and "
                "password (URL userinfo, the username/password options, or KAFKA_PLAIN_USERNAME "
                "and KAFKA_PLAIN_PASSWORD) and sasl_mechanism."
            )
        except (
            kafka_errors.UnsupportedSaslMechanismError,
            kafka_errors.IllegalSaslStateError,
        ) as exc:
            return BackboneError(
                f"{url} does not accept SASL {config.sasl_mechanism} on {host}:{port} "
                f"({config.redact(str(exc))}). Check security_protocol and sasl_mechanism "
                "against the listener's configuration."
            )
        except Exception as exc:
            reasons.append(f"{host}:{port}: {config.redact(cluster.describe(exc))}")
        else:
            conn.close()
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
