"""Gap accounting for one shared connection: counted, remembered, told to every ``on_gap``."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ._events import Gap

__all__ = ["GapCallback", "GapLog"]

logger = logging.getLogger("opal_broadcast")

GapCallback = Callable[[Gap], object]


class GapLog:
    """How many gaps there were, the last one, and who wants to hear of the next."""

    __slots__ = ("callbacks", "count", "last")

    def __init__(self) -> None:
        self.callbacks: list[GapCallback] = []
        self.count = 0
        self.last: Gap | None = None

    def add(self, callback: GapCallback | None) -> None:
        """Call ``callback`` at every gap from now on (None: nothing to do)."""
        if callback is not None:
            self.callbacks.append(callback)

    def discard(self, callback: GapCallback | None) -> None:
        """Stop calling ``callback`` (added once per add: removes one)."""
        if callback is not None and callback in self.callbacks:
            self.callbacks.remove(callback)

    def report(self, gap: Gap) -> None:
        """Count ``gap`` and tell every callback; a callback that raises is logged, not fatal."""
        self.count += 1
        self.last = gap
        for callback in list(self.callbacks):
            try:
                callback(gap)
            except Exception:
                logger.exception("a gap callback raised (ignored)")
