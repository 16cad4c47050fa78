"""Broadcast URLs: parsed once, secrets masked everywhere they could leak."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, quote, unquote

from ._errors import InvalidOption, InvalidURL

__all__ = ["BackboneURL", "HostPort"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")
_SECRET_NAME = re.compile(r"pass|secret|token|credential", re.IGNORECASE)
#: ``name=value`` of a secret-looking query option in raw URL text (group 2 is the value).
_SECRET_OPTION = re.compile(
    r"([?&][^=&#]*(?:pass|secret|token|credential)[^=&#]*=)([^&#]*)", re.IGNORECASE
)
_MASK = "***"


@dataclass(frozen=True)
class HostPort:
    """One ``host[:port]`` of a URL's host list."""

    host: str
    port: int | None


@dataclass(frozen=True, repr=False)
class BackboneURL:
    """A broadcast URL split into parts, with the password kept out of every rendering.

    ``str()`` and ``repr()`` show the URL with the password replaced by ``***``. The raw text is
    only available through :meth:`reveal`, which plugins call when they hand it to a driver.
    Multi-host netlocs (``kafka://h1:9092,h2:9092``, Postgres failover DSNs) are kept as text in
    ``hostlist`` and split by :attr:`hosts`, since urllib cannot read a port from them.
    """

    scheme: str
    username: str | None
    password: str | None
    hostlist: str
    path: str
    query: tuple[tuple[str, str], ...]
    fragment: str
    _raw: str = field(compare=False)

    @classmethod
    def parse(cls, url: str) -> BackboneURL:
        """Split ``url``; raise :class:`InvalidURL` (without echoing a password) when malformed."""
        if not isinstance(url, str):
            raise InvalidURL(f"A broadcast URL must be a str, not {type(url).__name__}.")
        return _parse(url)

    @classmethod
    def _parse(cls, url: str) -> BackboneURL:
        if not isinstance(url, str):
            raise InvalidURL(f"A broadcast URL must be a str, not {type(url).__name__}.")
        scheme, sep, _ = url.partition("://")
        if not sep:
            raise InvalidURL(
                f"{_mask_raw(url)!r} is not a broadcast URL: expected 'scheme://...', "
                "for example 'memory://', 'redis://localhost:6379/0' or 'postgres://localhost/db'."
            )
        if not _SCHEME.match(scheme):
            raise InvalidURL(f"{_mask_raw(url)!r} has an invalid scheme {scheme!r}.")
        _, userinfo, hostlist, rest = _split(url)
        rest, _, fragment = rest.partition("#")
        path, _, query_text = rest.partition("?")
        username = password = None
        if userinfo is not None:
            user_text, colon, password_text = userinfo.partition(":")
            username = unquote(user_text) or None
            password = unquote(password_text) if colon else None
        query = tuple(parse_qsl(query_text, keep_blank_values=True))
        parsed = cls(
            scheme=scheme.lower(),
            username=username,
            password=password,
            hostlist=hostlist,
            path=path,
            query=query,
            fragment=fragment,
            _raw=url,
        )
        parsed.hosts  # noqa: B018 - validates every port now, before any I/O
        return parsed

    @property
    def hosts(self) -> list[HostPort]:
        """The comma-separated hosts of the netloc; IPv6 literals in brackets; ports checked."""
        result = []
        for item in filter(None, self.hostlist.split(",")):
            host, port_text = self._host_and_port(item)
            port = None
            if port_text:
                if (
                    not (port_text.isascii() and port_text.isdigit())
                    or not 0 < int(port_text) < 65536
                ):
                    raise InvalidURL(f"{self} has an invalid port {port_text!r}.")
                port = int(port_text)
            result.append(HostPort(unquote(host), port))
        return result

    def _host_and_port(self, item: str) -> tuple[str, str]:
        """``host[:port]`` or ``[ipv6][:port]``, refused rather than guessed at when malformed."""
        if item.startswith("["):
            host, bracket, after = item[1:].partition("]")
            if not bracket:
                raise InvalidURL(f"{self} has an unclosed '[' in the host {item!r}.")
            if after and not after.startswith(":"):
                raise InvalidURL(
                    f"{self} has {after!r} after the IPv6 address [{host}]: expected ':port'."
                )
            return host, after[1:]
        if "[" in item or "]" in item:
            raise InvalidURL(f"{self} has a stray bracket in the host {item!r}.")
        if item.count(":") > 1:
            raise InvalidURL(
                f"{self} has the host {item!r}: write an IPv6 address in brackets, "
                "as in redis://[::1]:6379."
            )
        host, _, port_text = item.partition(":")
        return host, port_text

    @property
    def options(self) -> dict[str, str]:
        """Query options as a dict (the last value wins for a repeated key)."""
        return dict(self.query)

    def split_options(self, names: Iterable[str]) -> tuple[dict[str, str], BackboneURL]:
        """The query options called ``names``, and this URL without them (the rest as written)."""
        names = set(names)
        taken = {name: value for name, value in self.query if name in names}
        if not taken:
            return {}, self
        _, _, _, rest = _split(self._raw)
        rest, hash_mark, fragment = rest.partition("#")
        path, _, query_text = rest.partition("?")
        kept = [
            item
            for item in query_text.split("&")
            if item and unquote(item.partition("=")[0]) not in names
        ]
        raw = self._raw[: len(self._raw) - len(rest) - len(hash_mark) - len(fragment)]
        raw += path + ("?" + "&".join(kept) if kept else "") + hash_mark + fragment
        query = tuple((name, value) for name, value in self.query if name not in names)
        return taken, replace(self, query=query, _raw=raw)

    def reveal(self) -> str:
        """The URL exactly as given, password included. Only for handing to a driver."""
        return self._raw

    def masked(self) -> str:
        """The URL with its password, and secret-looking query values, replaced by ``***``.

        Query options whose name contains ``pass``, ``secret``, ``token`` or ``credential``
        (``password=``, ``sasl_plain_password=``, ``ssl_key_password=``) count as secrets.
        """
        return _SECRET_OPTION.sub(rf"\1{_MASK}", _mask_raw(self._raw))

    def redact(self, text: str) -> str:
        """Replace every form of this URL's password in ``text`` with ``***``."""
        for secret in self.secrets():
            text = text.replace(secret, _MASK)
        return text

    def secrets(self) -> list[str]:
        """Every form in which a secret of this URL could appear: decoded, as written, re-encoded."""
        values = [value for name, value in self.query if _SECRET_NAME.search(name)]
        if self.password:
            values.append(self.password)
        forms = {form for value in values for form in (value, quote(value, safe=""))}
        forms.add(_raw_password(self._raw) or "")
        forms.update(match.group(2) for match in _SECRET_OPTION.finditer(self._raw))
        return sorted(filter(None, forms), key=len, reverse=True)

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"BackboneURL({self.masked()!r})"


# Parsed URLs are immutable, and a new Broadcast per publish parses the same URL again and again.
_parse = functools.lru_cache(maxsize=64)(BackboneURL._parse)


def take_options(
    url: BackboneURL,
    allowed: Iterable[str],
    extra: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """Merge the URL's query options with keyword ``extra`` ones, refusing names not in ``allowed``.

    Plugins call this so a misspelt option is an error instead of being passed through silently.
    Keyword options win over query options of the same name.
    """
    allowed = set(allowed)
    merged: dict[str, object] = {**url.options, **(extra or {})}
    unknown = sorted(set(merged) - allowed)
    if unknown:
        import difflib

        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, allowed, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise InvalidOption(
            f"Unknown option {', '.join(hints)} for {url.scheme}:// URLs. "
            f"Accepted: {', '.join(sorted(allowed)) or 'none'}."
        )
    return merged


def _split(raw: str) -> tuple[str, str | None, str, str]:
    """``scheme://[userinfo@]hostlist<rest>`` -> (scheme, userinfo or None, hostlist, rest)."""
    scheme, _, after = raw.partition("://")
    cut = min((i for i in (after.find(c) for c in "/?#") if i >= 0), default=len(after))
    netloc, rest = after[:cut], after[cut:]
    userinfo, at, hostlist = netloc.rpartition("@")
    return scheme, (userinfo if at else None), hostlist, rest


def _raw_password(raw: str) -> str | None:
    userinfo = _split(raw)[1]
    if userinfo is None or ":" not in userinfo:
        return None
    return userinfo.partition(":")[2]


def _mask_raw(raw: str) -> str:
    scheme, userinfo, hostlist, rest = _split(raw)
    if userinfo is None and "@" in raw:
        # Malformed (an unencoded '/', '?' or '#' in a password, or no '://'): hide all that
        # could be credentials rather than guess where they end.
        head = f"{scheme}://" if "://" in raw else ""
        return f"{head}{_MASK}@{raw.rpartition('@')[2]}"
    if userinfo is None or ":" not in userinfo:
        return raw
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:{_MASK}@{hostlist}{rest}"
