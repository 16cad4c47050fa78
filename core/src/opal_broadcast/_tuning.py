"""The core's own settings: from keyword arguments, else from the URL's query, else defaults.

``gap_policy`` says what a subscriber does at a gap: ``end`` (the default: its iteration ends with
``SubscriptionGap``, for consumers that subscribe again and resync) or ``continue`` (it carries on
across the gap, which is logged, counted and told to ``on_gap``: for consumers that never
subscribe again, such as fastapi_websocket_pubsub's plain ``EventBroadcaster``).

The query is how an operator who only sets ``OPAL_BROADCAST_URI`` tunes them
(``redis://cache:6379/0?publish_timeout=2&probe_interval=10``). The core takes these options out
of the URL before the plugin sees it, so plugins never have to allow them. ``connect_timeout`` is
the exception: in a URL it stays the plugin's (libpq has an option of that name).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

from ._errors import InvalidOption
from ._url import BackboneURL

__all__ = ["DEFAULTS", "GAP_POLICIES", "IN_THE_URL", "GapPolicy", "Timings", "tuning"]

#: Seconds, except ``max_queue`` (messages) and ``max_queue_bytes``.
DEFAULTS: dict[str, float] = {
    "connect_timeout": 10.0,
    "publish_timeout": 5.0,
    "probe_interval": 5.0,
    "probe_timeout": 5.0,
    "reconnect_max_delay": 5.0,
    "max_queue": 10_000,
    "max_queue_bytes": 32 * 1024 * 1024,
}

#: Settings that are whole numbers, and what they count.
_WHOLE = {"max_queue": "messages", "max_queue_bytes": "bytes"}

GapPolicy = Literal["end", "continue"]
GAP_POLICIES: tuple[GapPolicy, ...] = ("end", "continue")

IN_THE_URL = (*(name for name in DEFAULTS if name != "connect_timeout"), "gap_policy")


def tuning(
    url: BackboneURL, given: dict[str, float | None], gap_policy: str | None = None
) -> tuple[BackboneURL, dict[str, float], GapPolicy]:
    """``url`` without the core's options, every setting and the gap policy: ``given`` wins."""
    from_url, rest = url.split_options(IN_THE_URL)
    policy = gap_policy if gap_policy is not None else from_url.get("gap_policy", "end")
    if policy not in GAP_POLICIES:
        where = f" in {url}" if gap_policy is None else ""
        raise InvalidOption(
            f"gap_policy={policy!r}{where} must be one of: {', '.join(GAP_POLICIES)}."
        )
    settings = {}
    for name, default in DEFAULTS.items():
        value = given.get(name)
        if value is not None:
            settings[name] = _checked(name, value, value, "")
        elif name in from_url:
            settings[name] = _checked(name, _number(name, from_url[name]), from_url[name], url)
        else:
            settings[name] = default
    return rest, settings, policy


def _number(name: str, text: str) -> float:
    try:
        return int(text) if name in _WHOLE and text.isascii() and text.isdigit() else float(text)
    except ValueError:
        return math.nan


def _checked(name: str, value: float, as_given: object, url: BackboneURL | str) -> float:
    """``value`` if it is a finite number above 0 (a whole one for ``max_queue(_bytes)``)."""
    whole = name not in _WHOLE or (isinstance(value, int) and not isinstance(value, bool))
    if isinstance(value, (int, float)) and whole and math.isfinite(value) and value > 0:
        return value
    unit = f"a whole number of {_WHOLE[name]}" if name in _WHOLE else "a finite number of seconds"
    where = f" in {url}" if url else ""
    raise InvalidOption(f"{name}={as_given!r}{where} must be {unit} above 0.")


@dataclass(frozen=True)
class Timings:
    """Connection-wide timings, in seconds (part of the sharing key: other timings, other hub)."""

    connect_timeout: float
    probe_interval: float
    probe_timeout: float
    reconnect_max_delay: float
    reconnect_min_delay: float = 0.05
    close_timeout: float = 2.0

    def backoff(self, attempt: int) -> float:
        """Capped exponential backoff with jitter (50-100% of the step) for ``attempt`` (0-based)."""
        step = min(self.reconnect_max_delay, self.reconnect_min_delay * 2.0 ** min(attempt, 64))
        return step * random.uniform(0.5, 1.0)
