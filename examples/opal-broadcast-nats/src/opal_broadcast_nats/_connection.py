"""One NATS connection through nats-py's asyncio client, reporting to the core through its link.

The core imports this module at discovery, so nats-py is imported lazily: when the first
connection opens (``lazy_import``); only annotations name its types directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opal_broadcast.plugin import (
    AuthenticationFailed,
    BackboneUnavailable,
    BackboneURL,
    BroadcastError,
    Link,
    MessageTooLarge,
    lazy_import,
)

from ._options import check_subject, settings_for

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

client = lazy_import("nats.aio.client", distribution="opal-broadcast-nats")
errors = lazy_import("nats.errors", distribution="opal-broadcast-nats")

__all__ = ["NatsConnection"]

logger = logging.getLogger("opal_broadcast.nats")

#: Seconds the server may take to answer a PING before the connection counts as lost.
PONG_TIMEOUT = 10


class NatsConnection:
    """One nats-py client and its subscriptions (the plugin contract's ``Connection``)."""

    def __init__(self, url: BackboneURL, link: Link) -> None:
        self.url = url
        self.link = link
        self.client = client.Client()
        self.subscriptions: dict[str, Subscription] = {}
        self._closing = False
        self._last_error: Exception | None = None

    @classmethod
    async def open(cls, url: BackboneURL, options: Mapping[str, Any], link: Link) -> NatsConnection:
        """Connect to the first server of the URL that answers, or raise a typed error."""
        settings = settings_for(url, options)
        connection = cls(url, link)
        user, password, token = url.username, url.password, None
        if user is not None and password is None:
            user, token = None, user  # nats://TOKEN@host
        try:
            await connection.client.connect(
                settings.servers,
                user=user,
                password=password,
                token=token,
                name=settings.name,
                connect_timeout=settings.server_timeout,
                # The core reconnects, restores the subscriptions and reports the gap; a driver
                # that reconnected on its own would hide the messages lost meanwhile.
                allow_reconnect=False,
                # Even so, connect() goes round the servers max_reconnect_attempts times (60 by
                # default, 2 s apart): try each twice, at once, and let the core back off.
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                error_cb=connection._on_error,
                disconnected_cb=connection._on_closed,
                closed_cb=connection._on_closed,
            )
        except BaseException as exc:
            # A refused login leaves nats-py's socket open. Close it in a task of its own: when
            # the core's connect timeout cancelled us, an await here would be cancelled too.
            connection._closing = True
            _keep(asyncio.ensure_future(connection.close()))
            if isinstance(exc, Exception):
                raise connection._connect_error(exc) from exc
            raise
        return connection

    @classmethod
    def check_channel(cls, url: BackboneURL, options: Mapping[str, Any], channel: str) -> None:
        check_subject(channel)

    @classmethod
    def check_message(
        cls, url: BackboneURL, options: Mapping[str, Any], channel: str, message: str | bytes
    ) -> None:
        """Nothing to check without the server: its ``max_payload`` is known once connected."""

    async def close(self) -> None:
        """Close the client and everything it runs. Never raises: it may be broken already."""
        self._closing = True
        try:
            await self.client.close()
        except Exception as exc:
            logger.debug("closing %s failed (ignored): %s", self.url, self._describe(exc))

    async def publish(self, channel: str, message: str | bytes) -> None:
        """Send one message and return once the server has it."""
        payload = message.encode() if isinstance(message, str) else message
        limit = self.client.max_payload  # from the server's INFO: its max_payload setting
        if len(payload) > limit:
            raise MessageTooLarge(
                f"The message is {len(payload)} bytes, over the {limit}-byte max_payload of "
                f"{self.url}; nothing was sent. Send less, or raise max_payload in the "
                "nats-server configuration."
            )
        try:
            await self.client.publish(channel, payload)
        except errors.Error as exc:
            raise self._unavailable("publish to", exc) from exc
        await self.round_trip()

    async def subscribe(self, channels: Sequence[str]) -> None:
        """Deliver each channel's messages to the link; return once the server has the interest
        (one PING after all the SUBs)."""
        for subject in channels:
            if subject not in self.subscriptions:
                try:
                    self.subscriptions[subject] = await self.client.subscribe(
                        subject, cb=self._receiver(subject)
                    )
                except errors.Error as exc:
                    raise self._unavailable(f"subscribe to {subject!r} on", exc) from exc
        await self.round_trip()

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        """Stop receiving ``channels`` (a closed connection has no interest left to remove)."""
        for subject in channels:
            subscription = self.subscriptions.pop(subject, None)
            if subscription is not None:
                with contextlib.suppress(errors.ConnectionClosedError):
                    await subscription.unsubscribe()

    async def probe(self) -> None:
        """A round trip (PING/PONG): a frozen server does not answer."""
        await self.round_trip()

    async def round_trip(self) -> None:
        """Return once the server has processed all we sent: a PING, answered by a PONG.

        Three nats-py (2.16) behaviours shape this. ``flush()`` writes its PING to the socket at
        once, ahead of commands still in the client's buffer, so let the client's flusher task
        write the buffer first. ``flush()`` returns without a PING when the client's reader task
        has died, so use ``rtt()``, which needs the PONG. And when a PING's wait is cancelled,
        the PONG that answers it kills the reader (it sets the result of a cancelled future)
        without telling anyone, so the wait runs in a task shielded from the caller's
        cancellation (the core's timeouts cancel hooks), ending at its own timeout.
        """
        delay = 0.0
        while self.client.pending_data_size and self.client.is_connected:
            await asyncio.sleep(delay)
            delay = 0.001
        await asyncio.shield(_keep(asyncio.ensure_future(self._ping())))

    async def _ping(self) -> None:
        try:
            await self.client.rtt(PONG_TIMEOUT)
        except errors.TimeoutError as exc:
            # nats-py has cancelled this PONG's future: the client breaks when the PONG comes.
            self.link.lost(f"no PONG within {PONG_TIMEOUT} s")
            raise BackboneUnavailable(
                f"{self.url} did not answer a PING within {PONG_TIMEOUT} s."
            ) from exc
        except errors.Error as exc:
            raise self._unavailable("reach", exc) from exc

    def _receiver(self, channel: str) -> Callable[[Msg], Awaitable[None]]:
        deliver = self.link.deliver

        async def receive(msg: Msg) -> None:
            deliver(channel, _decode(msg.data))

        return receive

    # -- nats-py's callbacks ------------------------------------------------------------------

    async def _on_closed(self) -> None:
        # nats-py calls this (twice: disconnected, then closed) when the socket is gone; with
        # allow_reconnect=False that is final. The core ignores all but the first report.
        if not self._closing:
            reason = self.client.last_error or self._last_error
            why = self._describe(reason) if reason is not None else "closed by the server"
            self.link.lost(f"the NATS connection closed ({why})")

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        if isinstance(exc, errors.SlowConsumerError):
            # nats-py dropped messages it had no room to queue: a gap the core must report.
            self.link.lost(f"nats-py dropped messages on {exc.subject!r} (slow consumer)")
        elif "permissions violation" in str(exc).lower():
            # The server refused a publish or a subscription but keeps the connection.
            logger.warning("%s refused an operation: %s", self.url, self._describe(exc))
        else:
            logger.debug("nats-py reported on %s: %s", self.url, self._describe(exc))

    # -- errors -------------------------------------------------------------------------------

    def _describe(self, exc: BaseException) -> str:
        return self.url.redact(f"{type(exc).__name__}: {exc}".rstrip(": "))

    def _unavailable(self, doing: str, exc: Exception) -> BackboneUnavailable:
        return BackboneUnavailable(f"Could not {doing} {self.url}: {self._describe(exc)}.")

    def _connect_error(self, exc: Exception) -> BroadcastError:
        # NoServersError only says every server failed; the last one's own error says why.
        cause = (self._last_error or exc) if isinstance(exc, errors.NoServersError) else exc
        if (
            isinstance(cause, errors.AuthorizationError)
            or "authorization violation" in str(cause).lower()
        ):
            return AuthenticationFailed(
                f"{self.url} refused the credentials ({self._describe(cause)}). Check the user "
                "and password, or the token, in the URL."
            )
        return BackboneUnavailable(
            f"Could not connect to {self.url} ({self._describe(cause)}). Check that nats-server "
            "is running and reachable from here."
        )


def _decode(data: bytes) -> str | bytes:
    """Text when the payload is UTF-8 (NATS carries bytes only, and most messages were text)."""
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data


_running: set[asyncio.Task[None]] = set()


def _keep(task: asyncio.Task[None]) -> asyncio.Task[None]:
    """Hold a reference to ``task`` until it ends, then retrieve its outcome so none is logged.

    Such a task outlives a cancelled caller; a PING still waiting when the connection closes
    ends at its own timeout (cancelling it would cancel the publish that awaits it).
    """
    _running.add(task)

    def done(task: asyncio.Task[None]) -> None:
        _running.discard(task)
        if not task.cancelled():
            task.exception()

    task.add_done_callback(done)
    return task
