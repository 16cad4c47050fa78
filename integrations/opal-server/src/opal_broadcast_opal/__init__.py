"""Run an unmodified OPAL server on opal-broadcast.

OPAL server reaches its broadcast channel through fastapi_websocket_pubsub's ``EventBroadcaster``,
which builds ``broadcaster.Broadcast`` objects and offers OPAL no option to change the class.
:func:`install` points fastapi_websocket_pubsub at :class:`opal_broadcast.Broadcast` instead;
:mod:`opal_broadcast_opal.asgi` does that in each worker before OPAL's app is imported::

    pip install opal-server opal-broadcast-opal opal-broadcast-postgres
    OPAL_BROADCAST_URI=postgres://... uvicorn opal_broadcast_opal.asgi:app --workers 4

``OPAL_BROADCAST_URI`` keeps its meaning and its values.
"""

from __future__ import annotations

__all__ = ["install"]


def install() -> None:
    """Make fastapi_websocket_pubsub build :class:`opal_broadcast.Broadcast` objects (idempotent).

    Call it before OPAL server's app is created: ``EventBroadcaster`` looks the class up when it
    is constructed.
    """
    import fastapi_websocket_pubsub.event_broadcaster as event_broadcaster

    import opal_broadcast

    event_broadcaster.Broadcast = opal_broadcast.Broadcast  # type: ignore[misc]
