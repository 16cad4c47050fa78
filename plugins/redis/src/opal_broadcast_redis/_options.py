"""Turn a ``redis://``, ``rediss://`` or ``unix://`` URL and its options into connection settings.

Everything here is checked before any I/O and imports no driver. The query string and keyword
options share one allow-list (``take_options``), so a misspelt option is an :class:`InvalidOption`
naming the closest accepted one instead of being passed to redis-py silently (``from_url`` would
forward it as a keyword argument).

Credentials come from, in this order: the URL's userinfo (percent-decoded), the ``username`` /
``password`` keyword options, then ``OPAL_BROADCAST_REDIS_USERNAME`` /
``OPAL_BROADCAST_REDIS_PASSWORD``. A password in the query string is refused: the core masks the
userinfo password in every rendering of the URL, not query values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opal_broadcast import BackboneURL, InvalidOption, InvalidURL, take_options

__all__ = ["ENV_PASSWORD", "ENV_USERNAME", "OPTIONS", "TLS_OPTIONS", "RedisConfig"]

ENV_USERNAME = "OPAL_BROADCAST_REDIS_USERNAME"
ENV_PASSWORD = "OPAL_BROADCAST_REDIS_PASSWORD"

DEFAULT_PORT = 6379

#: Options for rediss:// only: certificate verification is on unless turned off explicitly.
TLS_OPTIONS = (
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
)
#: Every option accepted, in the query string or as a keyword of ``Broadcast(...)``.
OPTIONS = ("db", "username", "password", "client_name", "decode_messages", *TLS_OPTIONS)

_KEYWORD_ONLY = ("password",)
_CERT_REQS = ("required", "optional", "none")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True, repr=False)
class RedisConfig:
    """Where and how to connect, parsed and checked. ``repr`` shows no secret."""

    url: BackboneURL
    #: Keyword arguments for redis-py's connection class (secrets included: never log them).
    connection_kwargs: dict[str, Any] = field(compare=False)
    tls: bool
    unix: bool
    decode_messages: bool
    password: str | None

    @classmethod
    def parse(
        cls,
        url: BackboneURL,
        options: Mapping[str, object],
        environ: Mapping[str, str] | None = None,
    ) -> RedisConfig:
        """Check ``url`` and ``options``; raise ``InvalidURL``/``InvalidOption`` when wrong."""
        environ = os.environ if environ is None else environ
        for name in _KEYWORD_ONLY:
            if name in url.options:
                raise InvalidOption(
                    f"{url} has {name!r} in its query string, where it would not be masked in "
                    f"logs. Put it in the userinfo (redis://user:PASSWORD@host), pass "
                    f"{name}=... to Broadcast(...), or set {ENV_PASSWORD}."
                )
        merged = take_options(url, OPTIONS, options)
        tls = url.scheme == "rediss"
        unix = url.scheme == "unix"
        if not tls:
            given = sorted(set(merged) & set(TLS_OPTIONS))
            if given:
                raise InvalidOption(
                    f"{', '.join(given)} only apply to TLS connections, but {url} is "
                    f"{url.scheme}://. Use rediss://host:port to connect with TLS."
                )
        kwargs: dict[str, Any] = {"db": _db(url, merged, unix)}
        kwargs.update(_address(url, unix))
        username, password = _credentials(url, merged, environ)
        if username is not None:
            kwargs["username"] = username
        if password is not None:
            kwargs["password"] = password
        client_name = merged.get("client_name")
        if client_name is not None:
            kwargs["client_name"] = _client_name(_text("client_name", client_name))
        if tls:
            kwargs.update(_tls(merged))
        decode = _bool("decode_messages", merged.get("decode_messages", True))
        return cls(url, kwargs, tls, unix, decode, password)

    def redact(self, text: str) -> str:
        """``text`` with the password masked, whether it came from the URL, an option or the env."""
        text = self.url.redact(text)
        if self.password:
            text = text.replace(self.password, "***")
        return text

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


def _db(url: BackboneURL, options: Mapping[str, object], unix: bool) -> int:
    from_path = None
    if not unix:
        text = url.path.strip("/")
        if text:
            if not text.isdigit():
                raise InvalidURL(f"{url}: the path must be a database number, like /0.")
            from_path = int(text)
    from_option = _int("db", options["db"]) if "db" in options else None
    if from_path is not None and from_option is not None and from_path != from_option:
        raise InvalidOption(
            f"{url} selects database {from_path} in its path and {from_option} with db=: "
            "give it once."
        )
    return from_path if from_path is not None else from_option or 0


def _credentials(
    url: BackboneURL, options: Mapping[str, object], environ: Mapping[str, str]
) -> tuple[str | None, str | None]:
    found = []
    for name, in_url, env in (
        ("username", url.username, ENV_USERNAME),
        ("password", url.password, ENV_PASSWORD),
    ):
        option = options.get(name)
        value = None if option is None else _text(name, option)
        if in_url is not None and value is not None and in_url != value:
            raise InvalidOption(
                f"{url} has a {name} in its userinfo and a different one in the {name} option: "
                "give it once."
            )
        chosen = in_url if in_url is not None else value
        if chosen is None:
            chosen = environ.get(env) or None
        found.append(chosen)
    return found[0], found[1]


def _tls(options: Mapping[str, object]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if name in options:
            path = Path(_text(name, options[name])).expanduser()
            if not path.is_file():
                raise InvalidOption(f"{name}={str(path)!r}: no such file.")
            kwargs[name] = str(path)
    if "ssl_keyfile" in kwargs and "ssl_certfile" not in kwargs:
        raise InvalidOption("ssl_keyfile needs ssl_certfile (the client certificate) as well.")
    reqs = _text("ssl_cert_reqs", options.get("ssl_cert_reqs", "required")).lower()
    if reqs not in _CERT_REQS:
        raise InvalidOption(
            f"ssl_cert_reqs={reqs!r} is not one of {', '.join(_CERT_REQS)} "
            "(required, the default, verifies the server's certificate)."
        )
    kwargs["ssl_cert_reqs"] = reqs
    kwargs["ssl_check_hostname"] = _bool(
        "ssl_check_hostname", options.get("ssl_check_hostname", True)
    )
    return kwargs


def _client_name(name: str) -> str:
    # CLIENT SETNAME refuses these; say so now rather than fail the handshake.
    if not name or any(not 0x21 <= ord(c) <= 0x7E for c in name):
        raise InvalidOption(
            f"client_name={name!r}: Redis accepts printable ASCII without spaces only."
        )
    return name


def _text(name: str, value: object) -> str:
    if isinstance(value, Path):
        return str(value)
    if not isinstance(value, str):
        raise InvalidOption(f"Option {name} must be a str, not {type(value).__name__}.")
    return value


def _int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidOption(f"Option {name} must be an int, not {type(value).__name__}.")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise InvalidOption(f"Option {name}={value!r} is not a non-negative integer.")
        return int(value)
    if value < 0:
        raise InvalidOption(f"Option {name}={value!r} must not be negative.")
    return value


def _bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise InvalidOption(f"Option {name}={value!r} is not a boolean (true/false, 1/0, yes/no).")
