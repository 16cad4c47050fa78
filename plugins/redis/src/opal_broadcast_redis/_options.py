"""Turn a ``redis://``, ``rediss://`` or ``unix://`` URL and its options into connection settings.

Everything here is checked before any I/O and imports no driver. :data:`OPTIONS` declares every
option once, for the query string and the keywords of ``Broadcast(...)`` alike (keywords win): the
core's toolkit refuses a misspelt name, suggesting the closest valid one (redis-py's ``from_url``
would forward it as a keyword argument silently), converts each value, refuses the password in
the query string and masks it in every error. :meth:`RedisConfig.parse` adds the rules that
involve the URL or several options.

Credentials come from, in this order: the URL's userinfo (percent-decoded), the ``username`` /
``password`` options, then ``OPAL_BROADCAST_REDIS_USERNAME`` / ``OPAL_BROADCAST_REDIS_PASSWORD``.
A userinfo and a different option is an error; a userinfo and a different environment value is
not (the userinfo wins).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opal_broadcast.plugin import (
    BackboneURL,
    InvalidOption,
    InvalidURL,
    Option,
    Options,
    Redactor,
)

__all__ = ["ENV_PASSWORD", "ENV_USERNAME", "OPTIONS", "TLS_OPTIONS", "RedisConfig"]

ENV_USERNAME = "OPAL_BROADCAST_REDIS_USERNAME"
ENV_PASSWORD = "OPAL_BROADCAST_REDIS_PASSWORD"

DEFAULT_PORT = 6379
_CERT_REQS = ("required", "optional", "none")


def _client_name(value: object) -> str:
    # CLIENT SETNAME refuses these; say so now rather than fail the handshake.
    if not isinstance(value, str) or not value or any(not 0x21 <= ord(c) <= 0x7E for c in value):
        raise ValueError("printable ASCII without spaces (Redis refuses any other client name)")
    return value


#: Every option accepted, in the query string or as a keyword of ``Broadcast(...)``.
OPTIONS = Options(
    Option.integer("db", minimum=0, help="database number (or the path /N); 0 by default"),
    Option.text("username", env=ENV_USERNAME, help="ACL user, when not in the userinfo"),
    Option.text("password", env=ENV_PASSWORD, secret=True, help="when not in the userinfo"),
    Option.value("client_name", _client_name, query=True, help="CLIENT SETNAME"),
    Option.boolean("decode_messages", default=True, help="UTF-8 payloads as str"),
    # rediss:// only: certificate verification is on unless turned off explicitly.
    Option.path("ssl_ca_certs", kind="file", help="CA bundle that signed the server's certificate"),
    Option.path("ssl_certfile", kind="file", help="client certificate (mutual TLS)"),
    Option.path("ssl_keyfile", kind="file", help="client key, with ssl_certfile"),
    Option.choice("ssl_cert_reqs", _CERT_REQS, default="required", case_sensitive=False),
    Option.boolean("ssl_check_hostname", default=True),
)
#: Options for rediss:// only.
TLS_OPTIONS = tuple(name for name in OPTIONS.names() if name.startswith("ssl_"))


@dataclass(frozen=True, repr=False)
class RedisConfig:
    """Where and how to connect, parsed and checked. ``repr`` shows no secret."""

    url: BackboneURL
    #: Where and how to connect and log in (secrets included: never log them).
    connection_kwargs: dict[str, Any] = field(compare=False)
    tls: bool
    unix: bool
    decode_messages: bool
    password: str | None
    #: ``redact(text)``: ``text`` with the password masked, from the URL, an option or the env.
    redact: Redactor = field(compare=False)

    @classmethod
    def parse(
        cls,
        url: BackboneURL,
        options: Mapping[str, object],
        environ: Mapping[str, str] | None = None,
    ) -> RedisConfig:
        """Check ``url`` and ``options``; raise ``InvalidURL``/``InvalidOption`` when wrong."""
        tls = url.scheme == "rediss"
        unix = url.scheme == "unix"
        given = set(url.options) | set(options)  # from the query or a keyword, not the env
        misplaced = sorted(given & set(TLS_OPTIONS))
        if misplaced and not tls:
            raise InvalidOption(
                f"{', '.join(misplaced)} only apply to TLS connections, but {url} is "
                f"{url.scheme}://. Use rediss://host:port to connect with TLS."
            )
        values = OPTIONS.parse(url, options, os.environ if environ is None else environ)
        kwargs: dict[str, Any] = {"db": _db(url, values["db"], unix), **_address(url, unix)}
        for name, in_url in (("username", url.username), ("password", url.password)):
            if in_url is not None and name in given and values[name] != in_url:
                raise InvalidOption(
                    f"{url} has a {name} in its userinfo and a different one in the {name} "
                    "option: give it once."
                )
            chosen = in_url if in_url is not None else values[name]
            if chosen is not None:
                kwargs[name] = chosen
        if values["client_name"] is not None:
            kwargs["client_name"] = values["client_name"]
        if tls:
            kwargs.update((n, values[n]) for n in TLS_OPTIONS if values[n] is not None)
            if "ssl_keyfile" in kwargs and "ssl_certfile" not in kwargs:
                raise InvalidOption("ssl_keyfile needs ssl_certfile (the client certificate) too.")
        password = kwargs.get("password")
        redact = Redactor(url, (password,))
        return cls(url, kwargs, tls, unix, values["decode_messages"], password, redact)

    def __repr__(self) -> str:
        return f"RedisConfig({str(self.url)!r})"


def _address(url: BackboneURL, unix: bool) -> dict[str, Any]:
    hosts = url.hosts
    if unix:
        if url.hostlist:
            raise InvalidURL(
                f"{url}: a unix:// URL names a socket path and no host: "
                "unix:///path/to/redis.sock?db=0 (three slashes)."
            )
        if not url.path or url.path == "/":
            raise InvalidURL(f"{url} names no socket path: use unix:///path/to/redis.sock.")
        return {"path": url.path}
    if len(hosts) > 1:
        raise InvalidURL(
            f"{url} lists several hosts; Redis pub/sub needs one server (Sentinel and Cluster "
            "are not supported by this plugin)."
        )
    host = hosts[0].host if hosts and hosts[0].host else "localhost"
    port = hosts[0].port if hosts and hosts[0].port is not None else DEFAULT_PORT
    return {"host": host, "port": port}


def _db(url: BackboneURL, from_option: int | None, unix: bool) -> int:
    text = "" if unix else url.path.strip("/")
    if text and not text.isdigit():
        raise InvalidURL(f"{url}: the path must be a database number, like /0.")
    from_path = int(text) if text else None
    if from_path is not None and from_option is not None and from_path != from_option:
        raise InvalidOption(
            f"{url} selects database {from_path} in its path and {from_option} with db=: "
            "give it once."
        )
    return from_path if from_path is not None else from_option or 0
