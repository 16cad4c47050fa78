"""The URL, keyword options and ``KAFKA_*`` environment variables, merged into a KafkaConfig.

Precedence, highest first: keyword options of ``Broadcast(url, **options)``, the URL (query
options, then the userinfo for the credentials), the environment, the defaults. An empty value
means the default. ``password`` and ``ssl_key_password`` may be query options (the URL masks
them); wherever they come from, they are masked in errors. No I/O here: the TLS files are read
when the connection opens.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opal_broadcast.plugin import BackboneURL, InvalidOption, InvalidURL, Option, Options, Redactor

from ._topics import check_prefix

__all__ = ["ENVIRONMENT", "OPTIONS", "KafkaConfig", "topic_prefix"]

logger = logging.getLogger("opal_broadcast.kafka")

DEFAULT_PORT = 9092
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_TLS_FILES = ("ssl_cafile", "ssl_capath", "ssl_certfile", "ssl_keyfile")


def _acks(value: object) -> int | str:
    text = str(value).strip().lower()
    if text in ("all", "-1"):
        return "all"
    if text == "1":
        return 1
    raise ValueError(
        "'all' (every in-sync replica has the message, the default) or 1 (the leader has it)"
    )


#: Every option, in the query string or as a keyword of ``Broadcast(url, **options)``, with the
#: variable OPAL deployments set for encode/broadcaster's Kafka backend, if there is one.
OPTIONS = Options(
    Option.text("topic_prefix", default=""),
    Option.integer("partitions", default=1, minimum=1, maximum=100_000),
    Option.integer("replication_factor", minimum=1, maximum=32767),  # None: min(3, brokers)
    Option.value("acks", _acks, default="all", query=True),
    # None: inferred from the credentials and TLS files (see _protocol)
    Option.choice(
        "security_protocol", PROTOCOLS, case_sensitive=False, env="KAFKA_SECURITY_PROTOCOL"
    ),
    Option.choice(
        "sasl_mechanism",
        MECHANISMS,
        default="PLAIN",
        case_sensitive=False,
        env="KAFKA_SASL_MECHANISM",
    ),
    Option.text("username", env="KAFKA_PLAIN_USERNAME"),
    Option.text("password", secret=True, env="KAFKA_PLAIN_PASSWORD"),
    Option.text("ssl_cafile", env="KAFKA_SSL_CAFILE"),
    Option.text("ssl_capath", env="KAFKA_SSL_CAPATH"),
    Option.text("ssl_certfile", env="KAFKA_SSL_CERTFILE"),
    Option.text("ssl_keyfile", env="KAFKA_SSL_KEYFILE"),
    Option.text("ssl_key_password", secret=True, env="KAFKA_SSL_KEY_PASSWORD"),
    Option.text("client_id", default="opal-broadcast"),
    Option.integer("fetch_max_wait_ms", default=100, minimum=0),
    Option.integer("request_timeout_ms", default=5000, minimum=1000),
    Option.integer("max_request_size", default=1048576, minimum=1024),
)
#: The environment variable of each option that has one.
ENVIRONMENT = {option.name: option.env for option in OPTIONS if option.env}


@dataclass(frozen=True)
class KafkaConfig:
    """Everything the connection needs; ``repr`` shows no secret."""

    bootstrap_servers: list[str]
    topic_prefix: str
    partitions: int
    replication_factor: int | None  # None: min(3, brokers in the cluster)
    acks: int | str
    security_protocol: str
    sasl_mechanism: str
    username: str | None
    password: str | None = field(repr=False)
    ssl_cafile: str | None
    ssl_capath: str | None
    ssl_certfile: str | None
    ssl_keyfile: str | None
    ssl_key_password: str | None = field(repr=False)
    client_id: str
    fetch_max_wait_ms: int
    request_timeout_ms: int
    max_request_size: int
    #: Masks the URL's password, ``password`` and ``ssl_key_password`` (its ``secrets``).
    redact: Redactor = field(repr=False, compare=False)

    @classmethod
    def parse(
        cls, url: BackboneURL, options: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> KafkaConfig:
        """Check the URL, options and environment (no I/O) and merge them."""
        if url.path not in ("", "/") or url.fragment:
            raise InvalidURL(
                f"{url} has a path or fragment, which kafka:// URLs do not use: write "
                "kafka://[user:password@]host[:port][,host2[:port]...][?option=value&...]."
            )
        # Options refuse secrets in the query string, but the URL masks these two there, where
        # they have always been accepted: they go in as keywords, above the userinfo and below
        # the real keywords (username too, so that its query value still beats the userinfo's).
        # A keyword hides the query value even when it is None, which leaves the option unset.
        query, rest = url.split_options(("username", "password", "ssl_key_password", *options))
        userinfo = {"username": url.username, "password": url.password}
        given = {k: v for k, v in {**userinfo, **query, **options}.items() if v is not None}
        parsed = OPTIONS.parse(rest, given, environ)
        values = {k: OPTIONS.options[k].default if v == "" else v for k, v in parsed.items()}
        values["security_protocol"] = protocol = _protocol(values, {*given, *rest.options})
        if protocol in ("SASL_PLAINTEXT", "SASL_SSL") and not (
            values["username"] and values["password"]
        ):
            raise InvalidOption(
                f"security_protocol={protocol} needs a username and a password for SASL "
                f"{values['sasl_mechanism']}: write kafka://user:password@host, pass "
                "username=/password=, or set KAFKA_PLAIN_USERNAME and KAFKA_PLAIN_PASSWORD."
            )
        if protocol in ("PLAINTEXT", "SSL") and values["username"]:
            logger.warning(
                "a Kafka username is set but security_protocol is %s, so it is not used; set "
                "security_protocol (or KAFKA_SECURITY_PROTOCOL) to SASL_PLAINTEXT or SASL_SSL",
                protocol,
            )
        if values["fetch_max_wait_ms"] >= values["request_timeout_ms"]:
            raise InvalidOption(
                f"The kafka:// option 'fetch_max_wait_ms' ({values['fetch_max_wait_ms']}) must "
                f"be below 'request_timeout_ms' ({values['request_timeout_ms']}), or every idle "
                "fetch would time out."
            )
        check_prefix(values["topic_prefix"])
        return cls(
            bootstrap_servers=[_server(h.host, h.port) for h in url.hosts]
            or [f"localhost:{DEFAULT_PORT}"],
            redact=Redactor(url, OPTIONS.secrets(values)),
            **values,
        )

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


def topic_prefix(url: BackboneURL, options: Mapping[str, Any]) -> str:
    """The ``topic_prefix`` option alone (for checks that need no connection)."""
    return check_prefix(options.get("topic_prefix", url.options.get("topic_prefix", "")))


def _protocol(values: Mapping[str, Any], given: set[str]) -> str:
    """The security protocol: set, else inferred from credentials and TLS files ``given`` in code
    or the URL (never from the environment alone, which broadcaster ignored without
    KAFKA_SECURITY_PROTOCOL: inferring there could break a working deployment)."""
    if values["security_protocol"]:
        return str(values["security_protocol"])
    tls = not given.isdisjoint(_TLS_FILES)
    if not given.isdisjoint(("username", "password")):
        return "SASL_SSL" if tls else "SASL_PLAINTEXT"
    return "SSL" if tls else "PLAINTEXT"


def _server(host: str, port: int | None) -> str:
    host = f"[{host}]" if ":" in host else host or "localhost"
    return f"{host}:{port or DEFAULT_PORT}"
