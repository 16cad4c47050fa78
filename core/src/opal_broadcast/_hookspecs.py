"""The pluggy hooks: ``opal_broadcast_backbone`` (every plugin's declaration) and the eight more
of contract 0, the deprecated hook-per-operation contract (run through ``_legacy``).

A plugin on the current contract implements only ``opal_broadcast_backbone`` and returns a
:class:`BackboneInfo` naming its :class:`~opal_broadcast.plugin.Connection` class; see
:mod:`opal_broadcast.plugin`. The other hooks below are documented for plugins written before it.
Hooks are called on the event loop of the ``Broadcast`` that opened the connection.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import pluggy

from ._contract import BackboneInfo, Link
from ._url import BackboneURL

__all__ = ["BackboneInfo", "BackboneLink", "hookimpl", "hookspec"]

PROJECT = "opal_broadcast"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Mark a plugin's functions with ``@hookimpl`` (or ``@hookimpl(...)``) to implement the hooks below.
hookimpl = pluggy.HookimplMarker(PROJECT)


#: The link's old name (contract 0).
BackboneLink = Link


@hookspec(firstresult=True)
def opal_broadcast_backbone() -> BackboneInfo:  # type: ignore[empty-body]
    """Declare the plugin: its schemes, contract version and connection class (required).

    Called once when the plugin is registered. Must be cheap and import no driver.
    """


@hookspec(firstresult=True)
def opal_broadcast_connect(  # type: ignore[empty-body]
    url: BackboneURL, options: dict[str, Any], link: BackboneLink
) -> Awaitable[Any]:
    """Open a connection to the backbone and return the plugin's handle for it (any object).

    ``url``: the parsed URL (``url.reveal()`` gives the raw text for the driver; never put it in
    an error or log: use ``str(url)``, which masks the password). ``options``: keyword options
    given to ``Broadcast(url, **options)``; merge them with the URL's query options using
    ``opal_broadcast.take_options`` so unknown ones are refused. ``link``: see
    :class:`BackboneLink`; keep it for the life of the connection.

    Called once per process, event loop and URL (the connection is shared), and again after every
    loss. Validate the URL and options before any I/O and raise ``InvalidURL``/``InvalidOption``.
    Raise ``AuthenticationFailed`` when credentials are refused and ``BackboneUnavailable`` when
    the server cannot be reached. The core bounds the call with its connect timeout.
    """


@hookspec(firstresult=True)
def opal_broadcast_check_channel(url: BackboneURL, options: dict[str, Any], channel: str) -> None:
    """Raise ``InvalidChannel`` if the backbone cannot carry ``channel`` (optional, synchronous).

    Called before the first publish or subscribe of each channel name, even while the backbone is
    unreachable, so a bad name is reported as such rather than as an outage. No I/O here. The core
    remembers names that passed, so this costs nothing per message.
    """


@hookspec(firstresult=True)
def opal_broadcast_check_message(
    url: BackboneURL, options: dict[str, Any], channel: str, message: str | bytes
) -> None:
    """Raise ``MessageTooLarge``/``InvalidMessage`` if the backbone cannot carry ``message``.

    Optional, synchronous, no I/O. Called only while the backbone is unreachable, before the core
    waits for it, so an oversized message is reported at once instead of as an outage; when
    connected, ``opal_broadcast_publish`` does its own checks as usual.
    """


@hookspec(firstresult=True)
def opal_broadcast_disconnect(connection: Any) -> Awaitable[None]:  # type: ignore[empty-body]
    """Close ``connection`` and release everything it holds.

    Called when the last ``Broadcast`` on the URL disconnects, and after a loss before
    reconnecting. Must not raise for a connection that is already broken; the core time-boxes it.
    """


@hookspec(firstresult=True)
def opal_broadcast_publish(  # type: ignore[empty-body]
    connection: Any, channel: str, message: str | bytes
) -> Awaitable[None]:
    """Send ``message`` to every subscriber of ``channel`` in every process.

    Check the message against the backbone's limits before any I/O and raise
    ``MessageTooLarge``/``InvalidMessage``; check the channel name too unless the plugin implements
    ``opal_broadcast_check_channel``, which the core calls before a name's first publish. Return
    when the backbone has accepted the message. Raise ``BackboneUnavailable`` when it cannot; the
    core bounds the call with the publish timeout. Messages from one publisher must be delivered
    in publish order.
    """


@hookspec(firstresult=True)
def opal_broadcast_subscribe(connection: Any, channel: str) -> Awaitable[None]:  # type: ignore[empty-body]
    """Start receiving ``channel`` and return only once the subscription is live on the backbone.

    Called for the first local subscriber of a channel, and for every subscribed channel after a
    reconnect. Deliver what arrives with ``link.deliver(channel, message)``.

    It may be called again for a channel whose previous call raised or was cancelled: make it
    idempotent, and leave nothing behind that ``unsubscribe`` would not find.
    """


@hookspec(firstresult=True)
def opal_broadcast_unsubscribe(connection: Any, channel: str) -> Awaitable[None]:  # type: ignore[empty-body]
    """Stop receiving ``channel``; every other channel stays subscribed.

    Called when the last local subscriber of the channel leaves.
    """


@hookspec(firstresult=True)
def opal_broadcast_probe(connection: Any) -> Awaitable[None] | None:
    """Check that the connection still carries traffic (optional; e.g. a PING or ``SELECT 1``).

    Called every ``probe_interval`` seconds while connected. Raising, or not finishing within
    ``probe_timeout``, counts as a loss: this is what finds a frozen connection (TCP open,
    nothing forwarded) that no driver notices. Implement it if the backbone can go silent.
    """
