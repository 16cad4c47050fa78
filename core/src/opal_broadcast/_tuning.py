"""The core's own settings: from keyword arguments, else from the URL's query, else defaults.

The query is how an operator who only sets ``OPAL_BROADCAST_URI`` tunes them
(``redis://cache:6379/0?publish_timeout=2&probe_interval=10``). The core takes these options out
of the URL before the plugin sees it, so plugins never have to allow them. ``connect_timeout`` is
the exception: in a URL it stays the plugin's (libpq has an option of that name).
"""

from __future__ import annotations

import math

from ._errors import InvalidOption
from ._url import BackboneURL

__all__ = ["DEFAULTS", "IN_THE_URL", "tuning"]

#: Seconds, except ``max_queue`` (messages).
DEFAULTS: dict[str, float] = {
    "connect_timeout": 10.0,
    "publish_timeout": 5.0,
    "probe_interval": 5.0,
    "probe_timeout": 5.0,
    "reconnect_max_delay": 5.0,
    "max_queue": 10_000,
}

IN_THE_URL = tuple(name for name in DEFAULTS if name != "connect_timeout")


def tuning(
    url: BackboneURL, given: dict[str, float | None]
) -> tuple[BackboneURL, dict[str, float]]:
    """``url`` without the core's options, and every setting: ``given`` (not None) wins."""
    from_url, rest = url.split_options(IN_THE_URL)
    settings = {}
    for name, default in DEFAULTS.items():
        value = given.get(name)
        if value is not None:
            settings[name] = _checked(name, value, value, "")
        elif name in from_url:
            settings[name] = _checked(name, _number(name, from_url[name]), from_url[name], url)
        else:
            settings[name] = default
    return rest, settings


def _number(name: str, text: str) -> float:
    try:
        return int(text) if name == "max_queue" else float(text)
    except ValueError:
        return math.nan


def _checked(name: str, value: float, as_given: object, url: BackboneURL | str) -> float:
    """``value`` if it is a finite number above 0 (a whole one for ``max_queue``)."""
    whole = name != "max_queue" or (isinstance(value, int) and not isinstance(value, bool))
    if isinstance(value, (int, float)) and whole and math.isfinite(value) and value > 0:
        return value
    unit = "a whole number of messages" if name == "max_queue" else "a finite number of seconds"
    where = f" in {url}" if url else ""
    raise InvalidOption(f"{name}={as_given!r}{where} must be {unit} above 0.")
