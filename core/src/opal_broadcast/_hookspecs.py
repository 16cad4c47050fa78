"""The plugin author's contract: the hooks a backbone plugin implements.

A backbone plugin is any object (usually a module) whose functions are marked with
:data:`hookimpl`. It is found through the ``opal_broadcast`` entry-point group::

    [project.entry-points.opal_broadcast]
    nats = "opal_broadcast_nats.plugin"

The entry-point module must import no driver: import it inside :func:`opal_broadcast_connect`, so a
missing or broken driver cannot break discovery of other backbones.

The core routes every call for a URL to exactly the one plugin that declared the URL's scheme, so
an implementation never checks the scheme itself, and an ``async def`` implementation is fine: its
coroutine is returned to the core, which awaits it. The core owns everything shared by all
backbones: connection sharing between ``Broadcast`` instances, fan-out to local subscribers (one
backbone subscription per channel however many subscribers), timeouts, liveness probing,
reconnection with backoff, restoring subscriptions and reporting gaps. A plugin only moves bytes
and reports, through its :class:`BackboneLink`, what arrives and when its connection is gone.

Hooks are called on the event loop of the ``Broadcast`` that opened the connection. The core never
calls subscribe and unsubscribe concurrently for one channel, but it does call them concurrently
for different channels, concurrently with publishes from many tasks, and concurrently with the
liveness probe. A plugin whose driver allows one operation at a time per connection must
serialise its own calls (or use separate connections).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

import pluggy

from ._url import BackboneURL

__all__ = ["BackboneInfo", "BackboneLink", "hookimpl", "hookspec"]

PROJECT = "opal_broadcast"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Mark a plugin's functions with ``@hookimpl`` (or ``@hookimpl(...)``) to implement the hooks below.
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class BackboneInfo:
    """What a plugin declares about itself.

    ``schemes``: the URL schemes it serves (lower case, without ``://``).
    ``async_libraries``: the async libraries it runs on; ``("asyncio",)`` for a plugin built on an
    asyncio driver. The core raises :class:`UnsupportedAsyncLibrary` under any other.
    ``summary``: one line for ``opal-broadcast backends``.
    """

    schemes: tuple[str, ...]
    async_libraries: tuple[str, ...] = ("asyncio", "trio")
    summary: str = ""


class BackboneLink(Protocol):
    """The plugin's way to talk back to the core for one connection (given to ``connect``).

    Both methods are synchronous and cheap; call them from the connection's reader.
    Calls through the link of a connection the core has already replaced are ignored.
    """

    #: A dict that survives reconnects of this shared connection, for the plugin's own use
    #: (for example consumer positions to resume from). Empty on the first connect.
    resume_state: dict[str, Any]

    def deliver(self, channel: str, message: str | bytes) -> bool:
        """Hand one message received on ``channel`` to every local subscriber of that channel.

        Returns False once the core has given up on this connection (after a loss): the message
        was not taken, so a plugin that tracks positions must not move past it.
        """

    def keep_secret(self, secret: str) -> None:
        """Mask ``secret`` in every error and log line the core writes about this connection.

        Call it in ``connect`` for credentials that do not sit in the URL's userinfo (keyword
        options, environment variables); the URL's own password is masked already.
        """

    def gap(self, channel: str, reason: str) -> None:
        """Report that messages of ``channel`` were dropped while the connection stays up.

        For example a fragmented message that could not be reassembled. The channel's
        subscribers see a gap (a default one ends, a ``keep_going`` one gets a marker); nothing
        reconnects. If the connection itself is in doubt, call :meth:`lost` instead.
        """

    def lost(self, reason: str | BaseException) -> None:
        """Report that the connection is gone or may have dropped messages.

        The core marks a gap on every channel, calls ``disconnect`` on this connection, and
        reconnects with backoff, subscribing every channel again. Report it even when the
        driver reconnected on its own: messages sent meanwhile were lost, and subscribers
        must hear of it.
        """


@hookspec(firstresult=True)
def opal_broadcast_backbone() -> BackboneInfo:  # type: ignore[empty-body]
    """Declare the schemes this plugin serves (required).

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
