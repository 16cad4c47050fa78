"""asyncpg's private ``Connection._process_notification(pid, channel, payload)``, overridden.

asyncpg's protocol calls it for each notification; asyncpg's own version schedules every
``add_listener`` callback with ``loop.call_soon`` (a handle and a context copy per notification).
The listening class made here (``connection_class`` is public asyncpg API) overrides it to deliver
at once, in order (the core's ``deliver`` never blocks), for the channels the plugin LISTENed to
itself, which it does in multi-statement round trips (``LISTEN "a"; LISTEN "b"``):
``add_listener`` sends one ``LISTEN`` per round trip.

Kept on its figures (bench/bench_postgres_internals.py, asyncpg 0.32, two runs in one sitting):
subscriber CPU per delivered message 0.79-0.89x a raw asyncpg listener through the override,
1.26-1.31x through ``add_listener`` (+43% to +67%; the goal is at most 0.93x), and 1,000
subscriptions entered at once in 0.02 s instead of 0.25-0.43 s.

:func:`listening_class` checks the method each time a listening session connects. Where it is
missing or takes other arguments, it returns plain ``asyncpg.Connection`` after one warning, and
the plugin uses ``add_listener``, one channel per round trip.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from .._connect import import_asyncpg
from . import fall_back

__all__ = ["listening_class"]

logger = logging.getLogger("opal_broadcast.postgres")


def listening_class() -> Any:
    """The ``connection_class`` for the listening session: the override where it holds."""
    base: Any = import_asyncpg().Connection
    try:
        inspect.signature(base._process_notification).bind(None, 1, "channel", "payload")
    except (AttributeError, TypeError, ValueError):
        fall_back(
            "Connection._process_notification(pid, channel, payload)",
            "LISTEN goes through add_listener, one channel per round trip, and every notification "
            "through loop.call_soon (more CPU per message, slower subscribes and restores)",
        )
        return base
    return _overriding(base)


@functools.cache
def _overriding(base: Any) -> Any:
    """``base`` (``asyncpg.Connection``) with the override; the plugin sets ``opal_notify``."""

    class ListeningConnection(base):  # type: ignore[misc]
        opal_notify: Callable[[int, str, str], None] | None = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            #: The channels the plugin LISTENed to in multi-statement round trips.
            self.opal_channels: set[str] = set()

        def _process_notification(self, pid: int, channel: str, payload: str) -> None:
            notify = self.opal_notify
            if notify is None or channel not in self.opal_channels:
                super()._process_notification(pid, channel, payload)
                return
            try:
                notify(pid, channel, payload)
            except Exception:  # never let it unwind into asyncpg's protocol
                logger.exception("delivering a notification on %r failed", channel)

    return ListeningConnection
