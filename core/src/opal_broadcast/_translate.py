"""Error translation with redaction: what any error about a backbone connection turns into.

One place decides how a failure reads to the user, for the core and for plugins alike: the text
has the URL's password and every declared secret masked, and the type is one of the hierarchy in
:mod:`opal_broadcast._errors` (an ``OSError`` or ``TimeoutError`` is :class:`BackboneUnavailable`,
anything else untyped is :class:`BackboneError`). A cause that would print a secret in a traceback
is dropped; any other is chained.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import NoReturn

from ._errors import BackboneError, BackboneUnavailable, BroadcastError
from ._url import BackboneURL

__all__ = ["ErrorMap", "Redactor"]

#: Driver exception types and the typed error each becomes, optionally with a hint to append:
#: ``{asyncpg.InvalidPasswordError: (AuthenticationFailed, "Check the password.")}``.
ErrorMap = Mapping[
    type[BaseException] | tuple[type[BaseException], ...],
    type[BroadcastError] | tuple[type[BroadcastError], str],
]


class Redactor:
    """Masks the secrets of one connection and translates its errors.

    The core keeps one per connection; a plugin may make its own for its connection object
    (``Redactor(url, secrets)``) and use :meth:`errors` around driver calls.
    """

    __slots__ = ("secrets", "url")

    def __init__(self, url: BackboneURL, secrets: Iterable[str | None] = ()) -> None:
        self.url = url
        #: Secrets from outside the URL (options, environment) that a plugin asked to mask.
        self.secrets: set[str] = {secret for secret in secrets if secret}

    def keep_secret(self, secret: str) -> None:
        """Mask ``secret`` from now on (an empty string is ignored)."""
        if secret:
            self.secrets.add(secret)

    def __call__(self, text: str) -> str:
        """``text`` with the URL's password and every kept secret masked."""
        text = self.url.redact(text)
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def describe(self, reason: str | BaseException) -> str:
        """A reason (text or exception) as one masked line."""
        text = reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"
        return self(text)

    def translate(
        self, exc: Exception, doing: str, mapping: ErrorMap | None = None
    ) -> BroadcastError:
        """``exc`` itself if it is typed and free of secrets, else a typed, masked replacement.

        ``doing`` completes "Error ... <url>", e.g. ``"publishing to"``. ``mapping`` names the
        typed error for driver exception types (the first match wins); otherwise an ``OSError``
        or ``TimeoutError`` becomes ``BackboneUnavailable`` and anything else ``BackboneError``.
        """
        text = str(exc)
        if isinstance(exc, BroadcastError) and self(text) == text:
            return exc
        message = f"Error {doing} {self.url}: " + self(f"{type(exc).__name__}: {text}")
        kind: type[BroadcastError] | None = None
        for types, target in (mapping or {}).items():
            if isinstance(exc, types):
                kind, hint = target if isinstance(target, tuple) else (target, "")
                message = f"{message.rstrip('.')}. {hint}".rstrip()
                break
        if kind is not None:
            pass
        elif isinstance(exc, BroadcastError):
            kind = type(exc)
        elif isinstance(exc, (OSError, TimeoutError)):  # includes ConnectionError
            kind = BackboneUnavailable
        else:
            kind = BackboneError
        try:
            return kind(message)
        except TypeError:  # an error type with a richer constructor
            return BackboneError(message)

    def reraise(self, exc: Exception, doing: str, mapping: ErrorMap | None = None) -> NoReturn:
        """Raise :meth:`translate`'s error, chained to ``exc`` unless that would leak a secret."""
        clean = self.translate(exc, doing, mapping)
        if clean is exc:
            raise exc
        if self(str(exc)) != str(exc):
            raise clean from None  # the cause would print the secret in a traceback
        raise clean from exc

    @contextmanager
    def errors(self, doing: str, mapping: ErrorMap | None = None) -> Iterator[None]:
        """Translate any ``Exception`` raised in the block into a typed, masked error::

        with redactor.errors("connecting to", {InvalidPasswordError: AuthenticationFailed}):
            await driver.connect(...)
        """
        try:
            yield
        except Exception as exc:
            self.reraise(exc, doing, mapping)
