"""The one private asyncpg internal this plugin relies on, checked when a connection opens.

``asyncpg.Connection._process_notification(pid, channel, payload)`` is what asyncpg's protocol
calls for each notification. The listening session's class overrides it, to deliver at once
rather than through ``loop.call_soon`` per notification, and to deliver the channels it LISTENed
to in one multi-statement round trip (``add_listener``, the public API, sends one ``LISTEN`` per
round trip: 10,000 channels took 4.9 s to restore). Should a future asyncpg rename it or change
its signature, :func:`notification_hook_available` says so, and the plugin uses the public path:
a plain ``asyncpg.Connection`` and ``add_listener``, one channel at a time.
"""

from __future__ import annotations

import inspect
import logging

from ._connect import import_asyncpg

__all__ = ["notification_hook_available"]

logger = logging.getLogger("opal_broadcast.postgres")

_checked: bool | None = None


def notification_hook_available() -> bool:
    """Whether asyncpg still calls ``Connection._process_notification(pid, channel, payload)``."""
    global _checked
    if _checked is None:
        method = getattr(import_asyncpg().Connection, "_process_notification", None)
        try:
            _checked = method is not None and bool(
                inspect.signature(method).bind(None, 1, "channel", "payload")
            )
        except (TypeError, ValueError):
            _checked = False
        if not _checked:
            logger.warning(
                "asyncpg no longer has Connection._process_notification(pid, channel, payload): "
                "LISTEN goes one channel per round trip through add_listener (slower restores)."
            )
    return _checked
