"""Run an unmodified OPAL server on opal-broadcast.

OPAL server reaches its broadcast channel through fastapi_websocket_pubsub's ``EventBroadcaster``,
which builds ``broadcaster.Broadcast`` objects and offers OPAL no option to change the class.
:func:`install` points fastapi_websocket_pubsub at :class:`opal_broadcast.Broadcast` instead;
:mod:`opal_broadcast_opal.asgi` does that in each worker before OPAL's app is imported::

    pip install opal-server opal-broadcast-opal opal-broadcast-postgres
    OPAL_BROADCAST_URI=postgres://... uvicorn opal_broadcast_opal.asgi:app --workers 4

``OPAL_BROADCAST_URI`` keeps its meaning and its values. ``OPAL_BROADCAST_METRICS_PORT=9464``
serves every worker's metrics on that port for Prometheus (see :mod:`opal_broadcast.prometheus`;
needs ``pip install 'opal-broadcast[prometheus]'``).

The gap policy follows the reader OPAL runs. OPAL's reconnecting broadcaster
(``OPAL_BROADCAST_RECONNECT_ENABLED``, on by default in opal-server 0.9.9) subscribes again after
a gap and resyncs its clients, so it gets the default, ``end``. fastapi_websocket_pubsub's plain
``EventBroadcaster`` (that setting off, older OPAL releases, other services) keeps one reader
that never subscribes again: an iteration that ended at a gap would leave the worker deaf for
good, so it gets ``continue``. A ``gap_policy`` in the URL wins over both.
"""

from __future__ import annotations

import os
from typing import Any

import opal_broadcast

__all__ = ["install"]


def install() -> None:
    """Make fastapi_websocket_pubsub build opal-broadcast's ``Broadcast`` objects (idempotent).

    Call it before OPAL server's app is created: ``EventBroadcaster`` looks the class up when it
    is constructed. It reads OPAL's ``BROADCAST_RECONNECT_ENABLED`` setting to pick the gap policy.
    """
    import fastapi_websocket_pubsub.event_broadcaster as event_broadcaster

    _serve_metrics_if_asked()

    if _opal_subscribes_again():
        event_broadcaster.Broadcast = opal_broadcast.Broadcast  # type: ignore[misc]
    else:
        event_broadcaster.Broadcast = _ContinuingBroadcast  # type: ignore[misc]


def _serve_metrics_if_asked() -> None:
    """``OPAL_BROADCAST_METRICS_PORT``: every worker exports, one serves them all."""
    from opal_broadcast import prometheus

    text = os.environ.get(prometheus.PORT_ENV, "").strip()
    if not text:
        return
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 65536):
        raise opal_broadcast.ConfigurationError(
            f"{prometheus.PORT_ENV}={text!r} must be a port number (1-65535), e.g. 9464."
        )
    prometheus.serve_workers(int(text))


class _ContinuingBroadcast(opal_broadcast.Broadcast):
    """``gap_policy="continue"`` unless the URL or the caller chooses one."""

    def __init__(self, url: str, **options: Any) -> None:
        if "gap_policy" not in opal_broadcast.BackboneURL.parse(url).options:
            options.setdefault("gap_policy", "continue")
        super().__init__(url, **options)


def _opal_subscribes_again() -> bool:
    """Whether OPAL server runs its reconnecting broadcaster, as its own configuration says.

    Without opal-server, or in a release that predates the setting, the reader is
    fastapi_websocket_pubsub's plain ``EventBroadcaster``.
    """
    try:
        from opal_server.config import opal_server_config
    except ModuleNotFoundError as exc:
        if exc.name != "opal_server":
            raise
        return False
    return bool(getattr(opal_server_config, "BROADCAST_RECONNECT_ENABLED", False))
