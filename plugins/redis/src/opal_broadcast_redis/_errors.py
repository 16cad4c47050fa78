"""What Redis's error replies and redis-py's connect failures become: typed errors, secrets masked."""

from __future__ import annotations

import ssl

from opal_broadcast.plugin import (
    AccessDenied,
    AuthenticationFailed,
    BackboneError,
    BackboneUnavailable,
    InvalidOption,
)

from ._options import ENV_PASSWORD, RedisConfig
from ._resp import ErrorReply, Reply

__all__ = ["chained", "check_reply", "connect_error", "unreachable"]

_AUTH_CODES = ("NOAUTH", "WRONGPASS", "NOPERM")
#: Commands naming channels: a NOPERM there is about the channel, not the login.
_CHANNEL_COMMANDS = ("SUBSCRIBE", "PUBLISH")


def check_reply(config: RedisConfig, reply: Reply, doing: str) -> None:
    """Raise the typed error for an error reply to ``doing`` (nothing for any other reply)."""
    if isinstance(reply, ErrorReply):
        text = config.redact(reply.text).rstrip(".")
        url = config.url
        if reply.code == "NOPERM" and doing in _CHANNEL_COMMANDS:
            raise AccessDenied(
                f"{url} refused {doing}: {text}. The ACL rules of this user do not allow "
                "the channel (see its '&pattern' rules, ACL GETUSER)."
            )
        if reply.code in _AUTH_CODES:
            raise AuthenticationFailed(
                f"{url} refused {doing}: {text}. Check the username and password (in the "
                f"URL, the password= option or {ENV_PASSWORD}) and the ACL rules of the user."
            )
        raise BackboneError(f"{url} answered {doing} with an error: {text}")


def connect_error(config: RedisConfig, exc: Exception) -> Exception:
    """A typed, secret-free error for a failure while connecting."""
    from redis import exceptions as redis_errors

    url = config.url
    text = config.redact(str(exc)).rstrip(".") or type(exc).__name__
    if isinstance(exc, (BackboneError, InvalidOption)):
        return exc
    if isinstance(exc, redis_errors.AuthenticationError) or _is_auth(exc):
        user = config.connection_kwargs.get("username") or "default"
        return AuthenticationFailed(
            f"{url} refused the credentials of user {user!r}: {text}. Check the username and "
            f"password (in the URL, the password= option or {ENV_PASSWORD})."
        )
    if isinstance(exc, redis_errors.ResponseError) and "DB index" in str(exc):
        return InvalidOption(f"{url}: {text}. Use a database number the server has.")
    tls = _ssl_error(exc)
    if tls is not None:
        hint = (
            "the server's certificate did not verify (check ssl_ca_certs, and the host name "
            "against the certificate, or ssl_check_hostname)"
            if isinstance(tls, ssl.SSLCertVerificationError)
            else "is it a TLS port? rediss:// needs a server with TLS enabled"
        )
        return BackboneUnavailable(
            f"TLS handshake with {url} failed: {config.redact(str(tls))}; {hint}."
        )
    if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)):
        return unreachable(config, text)
    return BackboneError(f"Could not connect to {url}: {type(exc).__name__}: {text}")


def unreachable(config: RedisConfig, text: str) -> BackboneUnavailable:
    """Redis could not be reached (``text``: the masked reason)."""
    hint = ""
    if not config.tls and "connecting to" not in text:
        # Connected, then dropped during the handshake: the usual sign of a TLS port.
        hint = " If the server only speaks TLS, use rediss://."
    return BackboneUnavailable(
        f"Could not connect to {config.url}: {text}. Check that Redis is running and "
        f"reachable from here.{hint}"
    )


def _is_auth(exc: BaseException) -> bool:
    text = str(exc)
    return any(code in text for code in (*_AUTH_CODES, "invalid password", "invalid username"))


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def chained(exc: Exception, config: RedisConfig) -> Exception | None:
    """Chain the driver's error unless its text would show the password."""
    return exc if config.redact(str(exc)) == str(exc) else None
