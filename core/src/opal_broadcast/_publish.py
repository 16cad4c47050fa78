"""The publish path, in one place: ``Broadcast.publish``, its deadlines, the plugin's publish.

A publish is checked (channel name, message type) before any I/O, then sent through the plugin
connection's ``publish``, bounded by ``publish_timeout``. While the
hub is down it waits for the connection, within the same deadline, after letting the plugin
refuse the message at once (``check_message``). Errors come out typed and masked.

On asyncio, with Python >= 3.11, the deadline is not a cancel scope: an anyio cancel scope costs
about as much as a loopback publish round trip's whole framework budget (~11 us per
``fail_after`` on the CI machine), and on that path every Python call shows (each is ~1% of a
loopback round trip). One timer per hub (:class:`~._deadlines.Deadlines`) watches every in-flight publish,
whatever its timeout, and :func:`publish` does the bookkeeping inline. Elsewhere
:attr:`Publisher.fast` is None and the slow path uses anyio's ``fail_after``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

import anyio

from ._deadlines import Deadlines
from ._errors import BackboneUnavailable, InvalidChannel, InvalidMessage
from ._wrappers import wrappers

if TYPE_CHECKING:
    from ._broadcast import Broadcast
    from ._hub import Hub

__all__ = ["Publisher", "check_channel_name", "publish"]


async def publish(self: Broadcast, channel: str, message: str | bytes) -> None:
    """Send ``message`` to every subscriber of ``channel`` in every process.

    Raises :class:`InvalidChannel`/:class:`InvalidMessage` before any I/O, and
    :class:`BackboneUnavailable` within ``publish_timeout`` when the backbone is unreachable.
    """
    hub = self._hub or self._require_hub()
    if type(channel) is not str or channel not in hub.checked_channels:
        check_channel_name(channel)
        hub.check_channel(channel)
    if not isinstance(message, (str, bytes)):
        raise InvalidMessage(
            f"A message must be str or bytes, not {type(message).__name__}: "
            "serialise it first (for example json.dumps)."
        )
    timeout = self._publish_timeout
    publisher = hub.publisher
    if wrappers.publish or hub.telemetry is not None:
        return await _observed(hub, channel, message, timeout)
    deadlines = publisher.fast
    task = asyncio.current_task(deadlines.loop) if deadlines is not None else None
    if deadlines is None or task is None or task in deadlines.inflight:
        return await publisher.publish(channel, message, timeout)  # not up, or nested
    # The hot path, inlined: see the module docstring.
    deadlines.inflight[task] = expiry = deadlines.clock() + timeout
    if expiry < deadlines.next_expiry:
        deadlines.schedule(expiry)
    try:
        await publisher.send(hub.connection, channel, message)
    except asyncio.CancelledError:
        if deadlines.timed_out(task):
            raise publisher.timed_out(timeout) from None
        raise
    except Exception as exc:
        publisher.failed(exc, timeout)
    finally:
        del deadlines.inflight[task]
        if deadlines.expired:
            deadlines.expired.discard(task)


async def _observed(hub: Hub, channel: str, message: str | bytes, timeout: float) -> None:
    """A publish with hook wrappers around it, or measured by telemetry, or both."""
    publisher = hub.publisher

    def attempt() -> Awaitable[None]:
        if not wrappers.publish:
            return publisher.publish(channel, message, timeout)
        return wrappers.hook.opal_broadcast_around_publish(  # type: ignore[no-any-return]
            url=hub.url,
            channel=channel,
            message=message,
            attempt=lambda: publisher.publish(channel, message, timeout),
        )

    telemetry = hub.telemetry
    if telemetry is None:
        await attempt()
    else:
        await telemetry.publish(channel, attempt)


def check_channel_name(channel: object) -> None:
    """Refuse what can be no channel's name, on any backbone."""
    if not isinstance(channel, str):
        raise InvalidChannel(f"A channel name must be a str, not {type(channel).__name__}.")
    if not channel:
        raise InvalidChannel("A channel name must not be empty.")


class Publisher:
    """One hub's publish path: the plugin's hook, the deadlines, the slow path and its errors."""

    __slots__ = ("deadlines", "fast", "hub", "send")

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        #: The connection's class's publish, called as ``send(connection, channel, message)``
        #: (set by the hub on each connect).
        self.send: Callable[[Any, str, str | bytes], Awaitable[None]] = hub.driver.publish
        self.deadlines = Deadlines(hub.loop)
        #: The deadlines of :func:`publish`'s hot path: set while the hub is up on asyncio
        #: (Python >= 3.11); None sends every publish through :meth:`publish`.
        self.fast: Deadlines | None = None

    def set_up(self, up: bool) -> None:
        """The hub is up (or not): open (or close) the hot path."""
        self.fast = self.deadlines if up and self.deadlines.native else None

    async def publish(self, channel: str, message: str | bytes, timeout: float) -> None:
        """Send within ``timeout`` seconds (waiting for the backbone if need be) or raise typed."""
        hub = self.hub
        try:
            with anyio.fail_after(timeout):
                if not hub.is_up:
                    # Let the plugin refuse the message now, not after waiting for the backbone.
                    hub.driver.check_message(hub.url, hub.options, channel, message)
                    await hub.wait_up()
                await self.send(hub.connection, channel, message)
        except Exception as exc:
            self.failed(exc, timeout)

    def failed(self, exc: Exception, timeout: float) -> NoReturn:
        """Raise the typed error for a publish that raised ``exc`` (a timeout: ``TimeoutError``)."""
        if isinstance(exc, TimeoutError):
            raise self.timed_out(timeout) from None
        self.hub.reraise(exc, "publishing to")

    def timed_out(self, timeout: float) -> BackboneUnavailable:
        """The error for a publish that took more than ``timeout`` seconds."""
        return BackboneUnavailable(
            self.hub.unavailable(f"publishing timed out after {timeout:g} s")
        )
