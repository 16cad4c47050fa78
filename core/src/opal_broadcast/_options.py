"""Typed option declarations for plugins: one list, from which the URL's query string and the
keyword options of ``Broadcast(url, **options)`` are parsed, checked and defaulted.

A plugin declares its options once::

    OPTIONS = Options(
        Option.text("name"),
        Option.integer("db", default=0, minimum=0),
        Option.duration("server_timeout", default=2.0, minimum=0.001),
        Option.text("password", secret=True, env="OPAL_BROADCAST_NATS_PASSWORD"),
    )

and parses them in ``Connection.open``: ``values = OPTIONS.parse(url, options)``. Unknown names
are refused with the list of valid ones; a bad value is refused naming the option, what was given
and what is expected; a ``secret`` option may not sit in the query string (the URL's renderings
mask query values only for names that look secret), and its value is masked in every error.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._errors import InvalidOption
from ._url import BackboneURL

__all__ = ["Option", "Options"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m|h)?\s*\Z")
_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")
_INTEGER = re.compile(r"\s*-?[0-9]+\s*\Z")


class _Refused(ValueError):
    """A converter's complaint: what was expected (the option's name and value are added)."""


@dataclass(frozen=True)
class Option:
    """One option: its name, how a raw value becomes a typed one, and where else it may come from.

    Build them with the constructors (:meth:`text`, :meth:`integer`, :meth:`number`,
    :meth:`boolean`, :meth:`choice`, :meth:`duration`, :meth:`path`, :meth:`value`).
    ``env``: an environment variable read when neither the URL nor a keyword gives the option.
    ``secret``: refused in the query string, and masked in errors. ``query``: False for options
    that only make sense as Python objects (an ``ssl.SSLContext``, a dict).
    """

    name: str
    convert: Callable[[object], Any]
    default: Any = None
    env: str | None = None
    secret: bool = False
    query: bool = True
    help: str = ""

    @classmethod
    def text(cls, name: str, *, default: str | None = None, **more: Any) -> Option:
        """A string (from a keyword, it must be a ``str``)."""
        return cls(name, _text, default, **more)

    @classmethod
    def integer(
        cls,
        name: str,
        *,
        default: int | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
        **more: Any,
    ) -> Option:
        """A whole number within ``[minimum, maximum]``."""
        return cls(name, _ranged(_integer, minimum, maximum, "a whole number"), default, **more)

    @classmethod
    def number(
        cls,
        name: str,
        *,
        default: float | None = None,
        minimum: float | None = None,
        maximum: float | None = None,
        **more: Any,
    ) -> Option:
        """A finite number within ``[minimum, maximum]``."""
        return cls(name, _ranged(_number, minimum, maximum, "a number"), default, **more)

    @classmethod
    def duration(
        cls,
        name: str,
        *,
        default: float | None = None,
        minimum: float | None = None,
        maximum: float | None = None,
        **more: Any,
    ) -> Option:
        """Seconds, as a float: ``5``, ``2.5s``, ``500ms``, ``2m`` or ``1h`` in the query string."""
        return cls(
            name, _ranged(_duration, minimum, maximum, "a duration in seconds"), default, **more
        )

    @classmethod
    def boolean(cls, name: str, *, default: bool | None = None, **more: Any) -> Option:
        """``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``)."""
        return cls(name, _boolean, default, **more)

    @classmethod
    def choice(
        cls,
        name: str,
        choices: Iterable[str],
        *,
        default: str | None = None,
        case_sensitive: bool = True,
        **more: Any,
    ) -> Option:
        """One of ``choices``; with ``case_sensitive=False`` any case is taken, and the value is
        the choice as declared (``required`` for ``REQUIRED``)."""
        allowed = {(c if case_sensitive else c.casefold()): c for c in choices}

        def convert(value: object) -> str:
            if not isinstance(value, str):
                raise _Refused(f"one of {', '.join(allowed.values())}")
            found = allowed.get(value.strip() if case_sensitive else value.strip().casefold())
            if found is None:
                raise _Refused(f"one of {', '.join(allowed.values())}")
            return found

        return cls(name, convert, default, **more)

    @classmethod
    def path(
        cls,
        name: str,
        *,
        default: str | None = None,
        must_exist: bool = True,
        kind: Literal["file", "directory"] | None = None,
        **more: Any,
    ) -> Option:
        """A filesystem path (``str``, ``~`` expanded), checked to exist unless
        ``must_exist=False``; with ``kind``, to be a file or a directory."""
        what = f"the path of an existing {kind or 'file or directory'}"
        exists = {"file": Path.is_file, "directory": Path.is_dir, None: Path.exists}[kind]

        def convert(value: object) -> str:
            text = os.fspath(value) if isinstance(value, os.PathLike) else _text(value)
            path = Path(str(text)).expanduser()
            if must_exist and not exists(path):
                raise _Refused(what)
            return str(path)

        return cls(name, convert, default, **more)

    @classmethod
    def value(
        cls,
        name: str,
        check: Callable[[object], Any] | None = None,
        *,
        default: Any = None,
        **more: Any,
    ) -> Option:
        """Anything ``check`` accepts (it returns the value to use or raises ``ValueError``
        saying what it expects; without ``check``, any value as given); keyword only unless
        ``query=True`` is given (``check`` then gets the query's text too)."""
        more.setdefault("query", False)
        return cls(name, check or _as_given, default, **more)


class Options:
    """A plugin's options; :meth:`parse` turns a URL's query and keywords into typed values."""

    def __init__(self, *options: Option) -> None:
        self.options: dict[str, Option] = {}
        for option in options:
            if not _NAME.match(option.name):
                raise ValueError(
                    f"option name {option.name!r} must be lower case letters, digits and '_'"
                )
            if option.name in self.options:
                raise ValueError(f"option {option.name!r} is declared twice")
            self.options[option.name] = option

    def __iter__(self) -> Any:
        return iter(self.options.values())

    def names(self) -> list[str]:
        """Every declared option name, sorted."""
        return sorted(self.options)

    def parse(
        self,
        url: BackboneURL,
        keywords: Mapping[str, object] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Every declared option's value: keyword, else query, else environment, else default.

        Raises :class:`InvalidOption` for an unknown name (listing the valid ones), a secret or
        keyword-only option in the query string, or a value its declaration refuses.
        """
        keywords = keywords or {}
        environ = os.environ if environ is None else environ
        unknown = sorted((set(url.options) | set(keywords)) - self.options.keys())
        if unknown:
            raise InvalidOption(self._unknown(url.scheme, unknown))
        values: dict[str, Any] = {}
        for name, option in self.options.items():
            if name in url.options and not (option.query and not option.secret):
                where = "a secret" if option.secret else "only a keyword option"
                raise InvalidOption(
                    f"The {url.scheme}:// option {name!r} is {where}: it may not be in the URL's "
                    f"query string. Pass {name}=... to Broadcast(...)"
                    + (f" or set {option.env}." if option.env else ".")
                )
            if name in keywords:
                raw, source = keywords[name], "keyword"
            elif name in url.options:
                raw, source = url.options[name], "query"
            elif option.env and environ.get(option.env):
                raw, source = environ[option.env], option.env
            else:
                values[name] = option.default
                continue
            values[name] = _convert(url.scheme, option, raw, source)
        return values

    def secrets(self, values: Mapping[str, Any]) -> list[str]:
        """The values of the secret options that are set: give each to ``link.keep_secret``."""
        return [
            str(values[name])
            for name, option in self.options.items()
            if option.secret and values.get(name)
        ]

    def _unknown(self, scheme: str, unknown: list[str]) -> str:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, self.options, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return (
            f"Unknown option {', '.join(hints)} for {scheme}:// URLs. "
            f"Valid options: {', '.join(self.names()) or 'none'}."
        )


def _convert(scheme: str, option: Option, raw: object, source: str) -> Any:
    try:
        return option.convert(raw)
    except InvalidOption:
        raise  # a check that words its own error
    except (ValueError, TypeError) as exc:
        shown = "***" if option.secret else repr(raw)
        where = "" if source in ("keyword", "query") else f" (from {source})"
        raise InvalidOption(
            f"The {scheme}:// option {option.name!r} must be {exc}, not {shown}{where}."
        ) from None


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise _Refused("a str")
    return value


def _integer(value: object) -> int:
    if isinstance(value, bool):
        raise _Refused("a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.match(value):
        return int(value)
    raise _Refused("a whole number")


def _number(value: object) -> float:
    if isinstance(value, bool):
        raise _Refused("a number")
    try:
        number = float(value if isinstance(value, (int, float)) else str(_text(value)).strip())
    except (ValueError, TypeError):
        raise _Refused("a number") from None
    if not math.isfinite(number):
        raise _Refused("a finite number")
    return number


def _duration(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number(value)
    match = _DURATION.match(_text(value))
    if match is None:
        raise _Refused("a duration in seconds (5, 2.5s, 500ms, 2m)")
    number, unit = match.groups()
    return float(number) * _UNITS[unit or "s"]


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _Refused("true or false")


def _number_text(number: float | None) -> str:
    """``1048576`` rather than ``1.04858e+06``; ``0.001`` as it is."""
    return str(int(number)) if number is not None and float(number).is_integer() else f"{number:g}"


def _as_given(value: object) -> object:
    return value


def _ranged(
    convert: Callable[[object], Any], low: float | None, high: float | None, what: str
) -> Callable[[object], Any]:
    if low is None and high is None:
        return convert
    bounds = (
        f"{what} from {_number_text(low)} to {_number_text(high)}"
        if low is not None and high is not None
        else f"{what} >= {_number_text(low)}"
        if low is not None
        else f"{what} <= {_number_text(high)}"
    )

    def checked(value: object) -> Any:
        try:
            number = convert(value)
        except _Refused:
            raise _Refused(bounds) from None
        if (low is not None and number < low) or (high is not None and number > high):
            raise _Refused(bounds)
        return number

    return checked
