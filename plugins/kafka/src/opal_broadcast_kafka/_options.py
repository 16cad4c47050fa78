"""The URL, keyword options and ``KAFKA_*`` environment variables, merged into driver settings.

Precedence, highest first: keyword options of ``Broadcast(url, **options)``, the URL (query
options, and the userinfo for the credentials), the environment, the defaults. No I/O here: the
TLS files are read when the connection opens.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opal_broadcast import BackboneURL, InvalidOption, InvalidURL, take_options

from ._topics import check_prefix

__all__ = ["ENVIRONMENT", "OPTIONS", "Settings", "settings_for", "topic_prefix"]

logger = logging.getLogger("opal_broadcast.kafka")

DEFAULT_PORT = 9092
#: Options accepted in the URL's query string or as keywords of ``Broadcast(url, **options)``.
OPTIONS = (
    "topic_prefix",
    "partitions",
    "replication_factor",
    "acks",
    "security_protocol",
    "sasl_mechanism",
    "username",
    "password",
    "ssl_cafile",
    "ssl_capath",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_key_password",
    "client_id",
    "fetch_max_wait_ms",
    "request_timeout_ms",
    "max_request_size",
)
#: The variables OPAL deployments set for encode/broadcaster's Kafka backend, per option.
ENVIRONMENT = {
    "security_protocol": "KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "KAFKA_SASL_MECHANISM",
    "username": "KAFKA_PLAIN_USERNAME",
    "password": "KAFKA_PLAIN_PASSWORD",
    "ssl_cafile": "KAFKA_SSL_CAFILE",
    "ssl_capath": "KAFKA_SSL_CAPATH",
    "ssl_certfile": "KAFKA_SSL_CERTFILE",
    "ssl_keyfile": "KAFKA_SSL_KEYFILE",
    "ssl_key_password": "KAFKA_SSL_KEY_PASSWORD",
}
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_TLS_FILES = ("ssl_cafile", "ssl_capath", "ssl_certfile", "ssl_keyfile")


@dataclass(frozen=True)
class Settings:
    """Everything the connection needs; ``repr`` shows no secret."""

    bootstrap_servers: list[str]
    topic_prefix: str = ""
    partitions: int = 1
    replication_factor: int | None = None  # None: min(3, brokers in the cluster)
    acks: int | str = "all"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_capath: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    client_id: str = "opal-broadcast"
    fetch_max_wait_ms: int = 100
    request_timeout_ms: int = 5000
    max_request_size: int = 1048576
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments shared by aiokafka's producer and consumer (not the SSL context)."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.username if self.uses_sasl else None,
            "sasl_plain_password": self.password if self.uses_sasl else None,
        }

    def redact(self, text: str) -> str:
        """``text`` with every secret of these settings replaced by ``***``."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def settings_for(
    url: BackboneURL, options: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> Settings:
    """Check the URL, options and environment (no I/O) and merge them into :class:`Settings`."""
    environ = os.environ if environ is None else environ
    if url.path not in ("", "/") or url.fragment:
        raise InvalidURL(
            f"{url} has a path or fragment, which kafka:// URLs do not use: write "
            "kafka://[user:password@]host[:port][,host2[:port]...][?option=value&...]."
        )
    given = take_options(url, OPTIONS, options)
    if url.username is not None:
        given.setdefault("username", url.username)
    if url.password is not None:
        given.setdefault("password", url.password)
    explicit = {name: value for name, value in given.items() if value is not None}
    chosen = dict(explicit)
    for name, variable in ENVIRONMENT.items():
        value = environ.get(variable)
        if value and name not in chosen:
            chosen[name] = value

    protocol = _protocol(explicit, chosen)
    mechanism = _choice(chosen, "sasl_mechanism", MECHANISMS, "PLAIN")
    username, password = _text(chosen, "username"), _text(chosen, "password")
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL") and (username is None or password is None):
        raise InvalidOption(
            f"security_protocol={protocol} needs a username and a password for SASL {mechanism}: "
            "write kafka://user:password@host, pass username=/password=, or set "
            "KAFKA_PLAIN_USERNAME and KAFKA_PLAIN_PASSWORD."
        )
    if protocol in ("PLAINTEXT", "SSL") and username is not None:
        logger.warning(
            "a Kafka username is set but security_protocol is %s, so it is not used; "
            "set security_protocol (or KAFKA_SECURITY_PROTOCOL) to SASL_PLAINTEXT or SASL_SSL",
            protocol,
        )
    request_timeout_ms = _integer(chosen, "request_timeout_ms", 5000, minimum=1000)
    fetch_max_wait_ms = _integer(chosen, "fetch_max_wait_ms", 100, minimum=0)
    if fetch_max_wait_ms >= request_timeout_ms:
        raise InvalidOption(
            f"The kafka:// option 'fetch_max_wait_ms' ({fetch_max_wait_ms}) must be below "
            f"'request_timeout_ms' ({request_timeout_ms}), or every idle fetch would time out."
        )
    replication = chosen.get("replication_factor")
    secrets = sorted(
        {s for s in (password, _text(chosen, "ssl_key_password")) if s}, key=len, reverse=True
    )
    return Settings(
        bootstrap_servers=[_server(h.host, h.port) for h in url.hosts]
        or [f"localhost:{DEFAULT_PORT}"],
        topic_prefix=check_prefix(chosen.get("topic_prefix", "")),
        partitions=_integer(chosen, "partitions", 1, minimum=1, maximum=100_000),
        replication_factor=None
        if replication is None
        else _integer(chosen, "replication_factor", 1, minimum=1, maximum=32767),
        acks=_acks(chosen.get("acks", "all")),
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        username=username,
        password=password,
        ssl_cafile=_text(chosen, "ssl_cafile"),
        ssl_capath=_text(chosen, "ssl_capath"),
        ssl_certfile=_text(chosen, "ssl_certfile"),
        ssl_keyfile=_text(chosen, "ssl_keyfile"),
        ssl_key_password=_text(chosen, "ssl_key_password"),
        client_id=_text(chosen, "client_id") or "opal-broadcast",
        fetch_max_wait_ms=fetch_max_wait_ms,
        request_timeout_ms=request_timeout_ms,
        max_request_size=_integer(chosen, "max_request_size", 1048576, minimum=1024),
        secrets=tuple(secrets),
    )


def topic_prefix(url: BackboneURL, options: Mapping[str, Any]) -> str:
    """The ``topic_prefix`` option alone (for checks that need no connection)."""
    return check_prefix(options.get("topic_prefix", url.options.get("topic_prefix", "")))


def _protocol(explicit: Mapping[str, Any], chosen: Mapping[str, Any]) -> str:
    """The security protocol: given, else inferred from credentials and TLS files given in code
    or the URL (never from the environment alone, which broadcaster ignored without
    KAFKA_SECURITY_PROTOCOL: inferring there could break a working deployment)."""
    if "security_protocol" in chosen:
        return _choice(chosen, "security_protocol", PROTOCOLS, "PLAINTEXT")
    tls = any(name in explicit for name in _TLS_FILES)
    if "username" in explicit or "password" in explicit:
        return "SASL_SSL" if tls else "SASL_PLAINTEXT"
    return "SSL" if tls else "PLAINTEXT"


def _choice(chosen: Mapping[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = chosen.get(name, default)
    text = value.strip().upper() if isinstance(value, str) else value
    if text not in allowed:
        raise InvalidOption(
            f"The kafka:// option {name!r} must be one of {', '.join(allowed)}, not {value!r}."
        )
    return str(text)


def _text(chosen: Mapping[str, Any], name: str) -> str | None:
    value = chosen.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidOption(
            f"The kafka:// option {name!r} must be a str, not {type(value).__name__}."
        )
    return value


def _integer(
    chosen: Mapping[str, Any], name: str, default: int, *, minimum: int, maximum: int | None = None
) -> int:
    value = chosen.get(name, default)
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value)
    if number is None or number < minimum or (maximum is not None and number > maximum):
        bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise InvalidOption(
            f"The kafka:// option {name!r} must be a whole number {bounds}, not {value!r}."
        )
    return number


def _acks(value: object) -> int | str:
    text = str(value).strip().lower()
    if text in ("all", "-1"):
        return "all"
    if text == "1":
        return 1
    raise InvalidOption(
        f"The kafka:// option 'acks' must be 'all' (every in-sync replica has the message, the "
        f"default) or 1 (the leader has it), not {value!r}."
    )


def _server(host: str, port: int | None) -> str:
    host = f"[{host}]" if ":" in host else host or "localhost"
    return f"{host}:{port or DEFAULT_PORT}"
