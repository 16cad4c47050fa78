"""What Redis's error replies and failures to connect become: typed errors, secrets masked."""

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

__all__ = ["check_reply", "connect_error", "unreachable"]

_AUTH_CODES = ("NOAUTH", "WRONGPASS", "NOPERM")
#: Commands naming channels: a NOPERM there is about the channel, not the login.
_CHANNEL_COMMANDS = ("SUBSCRIBE", "PUBLISH")


def check_reply(config: RedisConfig, reply: Reply, doing: str) -> None:
    """Raise the typed error for an error reply to ``doing`` (nothing for any other reply)."""
    if isinstance(reply, ErrorReply):
        text = config.redact(reply.text).rstrip(".")
        url = config.url
        if doing == "AUTH":  # WRONGPASS, or a password given to a server that has none
            user = config.connection_kwargs.get("username") or "default"
            raise AuthenticationFailed(
                f"{url} refused the credentials of user {user!r}: {text}. Check the username "
                f"and password (in the URL, the password= option or {ENV_PASSWORD})."
            )
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
        if doing == "SELECT":
            raise InvalidOption(f"{url}: {text}. Use a database number the server has.")
        raise BackboneError(f"{url} answered {doing} with an error: {text}")


def connect_error(config: RedisConfig, exc: OSError) -> BackboneUnavailable:
    """A typed, secret-free error for a transport that could not be opened."""
    if isinstance(exc, ssl.SSLError):
        hint = (
            "the server's certificate did not verify (check ssl_ca_certs, and the host name "
            "against the certificate, or ssl_check_hostname)"
            if isinstance(exc, ssl.SSLCertVerificationError)
            else "is it a TLS port? rediss:// needs a server with TLS enabled"
        )
        return BackboneUnavailable(
            f"TLS handshake with {config.url} failed: {config.redact(str(exc))}; {hint}."
        )
    kwargs = config.connection_kwargs
    where = kwargs["path"] if config.unix else f"{kwargs['host']}:{kwargs['port']}"
    reason = config.redact(str(exc)).rstrip(".") or type(exc).__name__
    return unreachable(config, f"connecting to {where}: {reason}")


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
