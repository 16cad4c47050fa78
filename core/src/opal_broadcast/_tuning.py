"""The core's own settings: from keyword arguments, else from the URL's query, else defaults.

The query is how an operator who only sets ``OPAL_BROADCAST_URI`` tunes them
(``redis://cache:6379/0?publish_timeout=2&probe_interval=10``). The core takes these options out
of the URL before the plugin sees it, so plugins never have to allow them. ``connect_timeout`` is
the exception: in a URL it stays the plugin's (libpq has an option of that name).
"""

from __future__ import annotations

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
        if value is None:
            value = _positive(name, from_url[name], url) if name in from_url else default
        settings[name] = value
    return rest, settings


def _positive(name: str, text: str, url: BackboneURL) -> float:
    try:
        value = int(text) if name == "max_queue" else float(text)
    except ValueError:
        value = 0
    if not value > 0:
        unit = "a whole number of messages" if name == "max_queue" else "a number of seconds"
        raise InvalidOption(f"{name}={text!r} in {url} must be {unit} above 0.")
    return value
