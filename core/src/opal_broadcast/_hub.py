"""One shared backbone connection per process, event loop and URL, and everything it owes subscribers.

The hub is where the core keeps its promises for every plugin alike: one backbone subscription per
channel fanned out to bounded local queues, timeouts on every backbone call, a liveness probe with
a deadline, reconnection with capped exponential backoff and jitter, subscriptions restored after a
reconnect, and every gap reported (to subscribers, to gap callbacks, to the log).
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import anyio

from ._deadline import Deadlines
from ._errors import BackboneError, BackboneUnavailable, BroadcastError, UnsupportedAsyncLibrary
from ._events import Event, Gap, Health, State
from ._registry import Backbone
from ._subscriber import Subscriber
from ._system_task import SystemTask, current_async_library
from ._url import BackboneURL

__all__ = ["Hub", "Settings", "open_hub"]

logger = logging.getLogger("opal_broadcast")

GapCallback = Callable[[Gap], object]

#: How many channel names that passed the plugin's check are remembered per connection.
_CHECKED_CHANNELS_KEPT = 10_000


@dataclass(frozen=True)
class Settings:
    """Connection-wide timings (part of the sharing key: different settings, different hubs)."""

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


class _Link:
    """The :class:`BackboneLink` handed to a plugin; inert once its connection is replaced."""

    __slots__ = ("active", "hub", "lost_early", "resume_state")

    def __init__(self, hub: Hub, resume_state: dict[str, Any]) -> None:
        self.hub = hub
        self.resume_state = resume_state
        self.active = True
        #: A loss reported while the connect hook was still running (the hub checks it after).
        self.lost_early: str | BaseException | None = None

    def deliver(self, channel: str, message: str | bytes) -> bool:
        if self.active:
            self.hub.deliver(channel, message)
            return True
        return False

    def keep_secret(self, secret: str) -> None:
        if secret:
            self.hub.secrets.add(secret)

    def gap(self, channel: str, reason: str) -> None:
        if self.active:
            self.hub.channel_gap(channel, reason)

    def lost(self, reason: str | BaseException) -> None:
        if not self.active:
            return
        if self.hub._link is not self:
            self.lost_early = reason
            return
        self.hub.lost(self, reason)


class _Channel:
    """One channel's local subscribers and whether the backbone subscription is live."""

    __slots__ = ("_lock", "_lock_users", "live", "pending", "subscribers")

    def __init__(self) -> None:
        self.subscribers: set[Subscriber[Any]] = set()
        self.live = False
        self.pending = 0
        # Only while (un)subscribing: an idle channel holds no lock (a lock weighs ~800 bytes).
        self._lock: anyio.Lock | None = None
        self._lock_users = 0

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Serialise backbone (un)subscribe calls for this channel."""
        if self._lock is None:
            self._lock = anyio.Lock()
        lock = self._lock
        self._lock_users += 1
        try:
            async with lock:
                yield
        finally:
            self._lock_users -= 1
            if not self._lock_users:
                self._lock = None


class Hub:
    """The shared connection. Reached through :func:`open_hub`; released by :meth:`release`."""

    def __init__(
        self,
        key: tuple[Any, ...],
        url: BackboneURL,
        backbone: Backbone,
        options: dict[str, Any],
        settings: Settings,
    ) -> None:
        self.key = key
        self.url = url
        self.backbone = backbone
        self.options = options
        self.settings = settings
        self._hooks = backbone.hooks
        #: The plugin's publish hook, called directly (see _direct_publish).
        self.send = _direct_publish(backbone.hooks)
        self._refs = 0
        self._lifecycle = anyio.Lock()
        self._state: State = "closed"
        self.connection: Any = None
        self._link: _Link | None = None
        self._resume_state: dict[str, Any] = {}
        self._generation = 0
        self._connected = anyio.Event()
        self._lost = anyio.Event()
        self._channels: dict[str, _Channel] = {}
        self._callbacks: list[GapCallback] = []
        self._supervisor: SystemTask | None = None
        #: The asyncio event loop this hub lives on (None on trio): known once, because finding
        #: the running loop costs CPython 3.11 a ``getpid()`` system call each time.
        self.loop = asyncio.get_running_loop() if current_async_library() == "asyncio" else None
        self._deadlines = Deadlines(self.loop)
        #: The deadlines of ``Broadcast.publish``'s hot path, inlined there (a Python call costs
        #: ~1% of a loopback round trip): set while connected on asyncio; None sends every publish
        #: through :meth:`publish`. The hot path calls :attr:`send` and, on error,
        #: :meth:`publish_failed`.
        self.fast_deadlines: Deadlines | None = None
        #: Channel names that passed the plugin's check (read by Broadcast.publish's hot path).
        self.checked_channels: set[str] = set()
        #: Secrets from outside the URL (options, environment) that plugins asked to mask.
        self.secrets: set[str] = set()
        self._since = time.time()
        self._reconnects = 0
        self._gaps = 0
        self._last_gap: Gap | None = None
        self._last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def acquire(self, on_gap: GapCallback | None) -> None:
        """Count one more user, opening the connection for the first."""
        if self._refs:  # already open: joining needs no I/O and no lock (the OPAL pattern)
            self._refs += 1
            if on_gap is not None:
                self._callbacks.append(on_gap)
            return
        async with self._lifecycle:
            if self._refs == 0:
                await self._open()
            self._refs += 1
            if on_gap is not None:
                self._callbacks.append(on_gap)

    async def release(self, on_gap: GapCallback | None) -> None:
        """Count one user less, closing the connection after the last. Never raises."""
        if on_gap is not None and on_gap in self._callbacks:
            self._callbacks.remove(on_gap)
            on_gap = None
        if self._refs > 1:
            self._refs -= 1
            return
        with anyio.CancelScope(shield=True):
            async with self._lifecycle:
                if on_gap is not None and on_gap in self._callbacks:
                    self._callbacks.remove(on_gap)
                self._refs -= 1
                if self._refs == 0:
                    await self._close()

    async def _open(self) -> None:
        library = current_async_library()
        info = self.backbone.info
        if info is not None and library not in info.async_libraries:
            raise UnsupportedAsyncLibrary(
                f"The {self.url.scheme}:// backbone ({self.backbone.origin}) runs on "
                f"{' or '.join(info.async_libraries)} only, not {library}. Run it under "
                f"{info.async_libraries[0]} (with anyio: backend={info.async_libraries[0]!r})."
            )
        self._enter("connecting")
        try:
            await self._connect_once()
        except BaseException:
            self._enter("closed")
            _hubs.pop(self.key, None)
            raise
        _hubs[self.key] = self
        self._mark_connected()
        self._supervisor = SystemTask(self._supervise)

    async def _close(self) -> None:
        self._enter("closed")
        self._connected.set()  # wake waiters: they see "closed" and raise
        if self._supervisor is not None:
            self._supervisor.cancel()
            with anyio.move_on_after(self.settings.close_timeout):
                await self._supervisor.done.wait()
            self._supervisor = None
        await self._drop_connection()
        self._channels.clear()
        if _hubs.get(self.key) is self:
            del _hubs[self.key]

    async def _connect_once(self) -> None:
        link = _Link(self, self._resume_state)
        try:
            with anyio.fail_after(self.settings.connect_timeout):
                connection = await self._hooks.opal_broadcast_connect(
                    url=self.url, options=dict(self.options), link=link
                )
        except BaseException as exc:
            link.active = False
            if isinstance(exc, TimeoutError):
                raise BackboneUnavailable(
                    f"Could not connect to {self.url} within {self.settings.connect_timeout:g} s. "
                    "Check that the server is up and reachable from here."
                ) from None
            if isinstance(exc, Exception):
                self.reraise(exc, "connecting to")
            raise
        if link.lost_early is not None:
            link.active = False
            await self._disconnect_quietly(connection)
            raise BackboneUnavailable(
                f"The connection to {self.url} was lost while connecting: "
                + self.redact(_describe(link.lost_early))
            )
        self._generation += 1
        self._link = link
        self.connection = connection

    async def _drop_connection(self) -> None:
        link, connection = self._link, self.connection
        self._link = self.connection = None
        if link is not None:
            link.active = False
        if connection is not None:
            await self._disconnect_quietly(connection)

    async def _disconnect_quietly(self, connection: Any) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.settings.close_timeout):
            try:
                await _maybe(self._hooks.opal_broadcast_disconnect(connection=connection))
            except BaseException as exc:
                if not (isinstance(exc, Exception) or _stray_cancellation(exc)):
                    raise
                logger.debug("closing %s failed (ignored): %s", self.url, self.redact(repr(exc)))

    def _mark_connected(self) -> None:
        self._enter("connected")
        self._since = time.time()
        self._connected.set()

    # -- supervision: probing and reconnecting ------------------------------------------------

    async def _supervise(self) -> None:
        try:
            async with anyio.create_task_group() as tasks:
                if self._hooks.opal_broadcast_probe.get_hookimpls():
                    tasks.start_soon(self._probe_forever)
                while True:
                    await self._lost.wait()
                    await self._reconnect()
        except BaseException as exc:
            # Only close() may stop supervision; anything else would leave subscribers deaf.
            if self._state != "closed":
                logger.error(
                    "supervision of %s stopped unexpectedly (%r): no more probes or reconnects",
                    self.url,
                    exc,
                )
            if isinstance(exc, Exception):
                return  # on trio an escaping error would crash the whole run
            raise

    async def _probe_forever(self) -> None:
        while True:
            await anyio.sleep(self.settings.probe_interval)
            link, connection = self._link, self.connection
            if self._state != "connected" or link is None:
                continue
            try:
                with anyio.fail_after(self.settings.probe_timeout):
                    await _maybe(self._hooks.opal_broadcast_probe(connection=connection))
            except BaseException as exc:
                if not (isinstance(exc, Exception) or _stray_cancellation(exc)):
                    raise
                why = (
                    f"no answer within {self.settings.probe_timeout:g} s"
                    if isinstance(exc, TimeoutError)
                    else f"{type(exc).__name__}: {exc}"
                )
                self.lost(link, f"liveness probe failed ({why})")

    async def _reconnect(self) -> None:
        started = time.monotonic()
        attempt = 0
        while True:
            self._lost = anyio.Event()
            await self._drop_connection()
            try:
                await self._connect_once()
                await self._restore_subscriptions()
            except BaseException as exc:
                if not (isinstance(exc, Exception) or _stray_cancellation(exc)):
                    raise
                self._last_error = self.redact(f"{type(exc).__name__}: {exc}")
                delay = self.settings.backoff(attempt)
                logger.info(
                    "reconnecting to %s failed (attempt %d), next try in %.2f s: %s",
                    self.url,
                    attempt + 1,
                    delay,
                    self._last_error,
                )
                attempt += 1
                await anyio.sleep(delay)
                continue
            if not self._lost.is_set():
                break
            # Lost again while restoring: go round again.
        self._reconnects += 1
        self._mark_connected()
        logger.warning(
            "reconnected to %s after %.2f s (%d attempt(s)); %d channel(s) restored",
            self.url,
            time.monotonic() - started,
            attempt + 1,
            sum(1 for entry in self._channels.values() if entry.live),
        )

    async def _restore_subscriptions(self) -> None:
        for channel, entry in list(self._channels.items()):
            async with entry.exclusive():
                if entry.subscribers and not entry.live:
                    with anyio.fail_after(self.settings.connect_timeout):
                        await self._hooks.opal_broadcast_subscribe(
                            connection=self.connection, channel=channel
                        )
                    entry.live = True

    def lost(self, link: _Link, reason: str | BaseException) -> None:
        """A plugin (or the probe) reports the connection gone: gap now, reconnect soon."""
        if link is not self._link:
            return
        link.active = False
        self._lost.set()
        if self._state != "connected":
            return  # already reconnecting: the gap is reported
        text = self.redact(_describe(reason))
        self._enter("reconnecting")
        self._last_error = text
        self._connected = anyio.Event()
        for entry in self._channels.values():
            entry.live = False
        logger.warning("lost the connection to %s: %s; reconnecting", self.url, text)
        self._report_gap(Gap(None, f"connection to {self.url} lost: {text}"))

    def channel_gap(self, channel: str, reason: str) -> None:
        """A plugin dropped messages of one channel but the connection is fine: tell its subscribers."""
        entry = self._channels.get(channel)
        if entry is None:
            return
        gap = Gap(channel, self.redact(reason))
        logger.warning("gap on %r at %s: %s", channel, self.url, gap.reason)
        self._gaps += 1
        self._last_gap = gap
        for subscriber in list(entry.subscribers):
            subscriber.offer_gap(gap)
        self._notify(gap)

    def _notify(self, gap: Gap) -> None:
        for callback in list(self._callbacks):
            try:
                callback(gap)
            except Exception:
                logger.exception("a gap callback raised (ignored)")

    def _report_gap(self, gap: Gap) -> None:
        self._gaps += 1
        self._last_gap = gap
        for entry in self._channels.values():
            for subscriber in list(entry.subscribers):
                subscriber.offer_gap(Gap(subscriber.channel, gap.reason, gap.missed, gap.at))
        self._notify(gap)

    # -- messages ---------------------------------------------------------------------------

    def deliver(self, channel: str, message: str | bytes) -> None:
        """Fan one received message out to the channel's local subscribers (never blocks)."""
        entry = self._channels.get(channel)
        if entry is None:
            return
        event = Event(channel, message)
        for subscriber in entry.subscribers:
            subscriber.offer(event)

    def check_channel(self, channel: str) -> None:
        """Let the plugin refuse a channel name before any I/O (each name is checked once)."""
        if channel in self.checked_channels:
            return
        self._hooks.opal_broadcast_check_channel(
            url=self.url, options=self.options, channel=channel
        )
        if len(self.checked_channels) >= _CHECKED_CHANNELS_KEPT:
            self.checked_channels.clear()
        self.checked_channels.add(channel)

    def _enter(self, state: State) -> None:
        self._state = state
        native = state == "connected" and self._deadlines.native
        self.fast_deadlines = self._deadlines if native else None

    async def publish(self, channel: str, message: str | bytes, timeout: float) -> None:
        """Send within ``timeout`` seconds (waiting for the backbone if need be) or raise typed."""
        try:
            with anyio.fail_after(timeout):
                if self._state != "connected":
                    # Let the plugin refuse the message now, not after waiting for the backbone.
                    self._hooks.opal_broadcast_check_message(
                        url=self.url, options=self.options, channel=channel, message=message
                    )
                    await self._wait_connected()
                await self.send(self.connection, channel, message)
        except Exception as exc:
            self.publish_failed(exc, timeout)

    def publish_failed(self, exc: Exception, timeout: float) -> NoReturn:
        """Raise the typed error for a publish that raised ``exc`` (a timeout: ``TimeoutError``)."""
        if isinstance(exc, TimeoutError):
            raise self.timed_out(timeout) from None
        self.reraise(exc, "publishing to")

    def timed_out(self, timeout: float) -> BackboneUnavailable:
        """The error for a publish that took more than ``timeout`` seconds."""
        return BackboneUnavailable(self._unavailable(f"publishing timed out after {timeout:g} s"))

    async def _wait_connected(self) -> None:
        while self._state != "connected":
            if self._state == "closed":
                raise BackboneUnavailable(f"The connection to {self.url} is closed.")
            await self._connected.wait()

    def _unavailable(self, what: str) -> str:
        detail = f" Last error: {self._last_error}." if self._last_error else ""
        return f"{self.url} is unavailable ({self._state}): {what}.{detail}"

    # -- subscriptions ----------------------------------------------------------------------

    async def add(self, subscriber: Subscriber[Any], timeout: float) -> None:
        """Make the channel live on the backbone (once for all local subscribers), then attach."""
        channel = subscriber.channel
        entry = self._channels.get(channel)
        if entry is None:
            entry = self._channels[channel] = _Channel()
        entry.pending += 1
        try:
            with anyio.fail_after(timeout):
                async with entry.exclusive():
                    while not entry.live:
                        await self._wait_connected()
                        generation = self._generation
                        await self._hooks.opal_broadcast_subscribe(
                            connection=self.connection, channel=channel
                        )
                        # A loss while subscribing leaves the new connection unsubscribed.
                        entry.live = generation == self._generation and self._state == "connected"
                    entry.subscribers.add(subscriber)
        except TimeoutError:
            raise BackboneUnavailable(
                self._unavailable(f"subscribing to {channel!r} timed out after {timeout:g} s")
            ) from None
        except Exception as exc:
            self.reraise(exc, "subscribing to")
        finally:
            entry.pending -= 1
            self._forget_if_unused(channel, entry)

    def detach(self, subscriber: Subscriber[Any]) -> None:
        """Stop delivering to ``subscriber`` now (its context exit will tidy up the backbone)."""
        entry = self._channels.get(subscriber.channel)
        if entry is not None:
            entry.subscribers.discard(subscriber)

    async def remove(self, subscriber: Subscriber[Any]) -> None:
        """Detach ``subscriber``; unsubscribe the backbone after the channel's last one. Never raises."""
        channel = subscriber.channel
        entry = self._channels.get(channel)
        if entry is None:
            return
        entry.subscribers.discard(subscriber)
        if entry.subscribers or entry.pending:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.settings.close_timeout):
            async with entry.exclusive():
                if entry.live and not entry.subscribers and self._state == "connected":
                    entry.live = False
                    try:
                        await _maybe(
                            self._hooks.opal_broadcast_unsubscribe(
                                connection=self.connection, channel=channel
                            )
                        )
                    except Exception as exc:
                        logger.debug("unsubscribing %r failed (ignored): %s", channel, exc)
        self._forget_if_unused(channel, entry)

    def _forget_if_unused(self, channel: str, entry: _Channel) -> None:
        unused = not entry.subscribers and not entry.pending and not entry.live
        if unused and self._channels.get(channel) is entry:
            del self._channels[channel]

    # -- reporting --------------------------------------------------------------------------

    def health(self) -> Health:
        """A snapshot of this connection."""
        return Health(
            url=str(self.url),
            state=self._state,
            since=self._since,
            reconnects=self._reconnects,
            gaps=self._gaps,
            last_gap=self._last_gap,
            last_error=self._last_error,
            channels=sum(1 for e in self._channels.values() if e.live),
            subscribers=sum(len(e.subscribers) for e in self._channels.values()),
        )

    def redact(self, text: str) -> str:
        """``text`` with the URL's password and every secret a plugin declared masked."""
        text = self.url.redact(text)
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def reraise(self, exc: Exception, doing: str) -> NoReturn:
        """Raise ``exc`` if it is typed and free of secrets, else a typed, masked replacement."""
        text = str(exc)
        leaked = self.redact(text) != text
        if isinstance(exc, BroadcastError) and not leaked:
            raise exc
        message = f"Error {doing} {self.url}: " + self.redact(f"{type(exc).__name__}: {text}")
        if isinstance(exc, BroadcastError):
            kind: type[BroadcastError] = type(exc)
        elif isinstance(exc, (OSError, TimeoutError)):  # includes ConnectionError
            kind = BackboneUnavailable
        else:
            kind = BackboneError
        try:
            clean = kind(message)
        except TypeError:  # an error type with a richer constructor
            clean = BackboneError(message)
        if leaked:
            raise clean from None  # the cause would print the secret in a traceback
        raise clean from exc


def _direct_publish(hooks: Any) -> Callable[[Any, str, str | bytes], Awaitable[None]]:
    """The publish hook as a plain call: the hot path skips pluggy's dispatch.

    Every plugin has a plugin manager of its own, so routing happened once, when the scheme was
    resolved; what pluggy would add per message is its generic multi-call loop (about 2 us, 40%
    of the core's share of a publish). Wrappers, or an implementation taking fewer arguments,
    keep the pluggy call.
    """
    caller = hooks.opal_broadcast_publish
    (impl, *others) = caller.get_hookimpls()
    plain = not others and not (impl.hookwrapper or impl.wrapper)
    if plain and tuple(impl.argnames) == ("connection", "channel", "message"):
        return impl.function  # type: ignore[no-any-return]

    def publish(connection: Any, channel: str, message: str | bytes) -> Awaitable[None]:
        return caller(connection=connection, channel=channel, message=message)  # type: ignore[no-any-return]

    return publish


def _stray_cancellation(exc: BaseException) -> bool:
    """A CancelledError raised by a driver's own inner task, not by a cancellation of ours.

    Some drivers (aiokafka's ``stop()``) re-raise the cancellation of a task they own; treated as
    a cancellation of ours it would end the supervisor and leave every subscriber deaf.
    """
    if not isinstance(exc, asyncio.CancelledError) or sys.version_info < (3, 11):
        return False
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


def _describe(reason: str | BaseException) -> str:
    return reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"


async def _maybe(result: Awaitable[None] | None) -> None:
    """Await an optional hook's result (``None`` when the plugin does not implement it)."""
    if result is not None:
        await result


_hubs: dict[tuple[Any, ...], Hub] = {}


async def open_hub(
    key: tuple[Any, ...], make: Callable[[], Hub], on_gap: GapCallback | None
) -> Hub:
    """The hub for ``key`` (created by ``make`` when there is none), acquired once more."""
    hub = _hubs.get(key)
    if hub is None:
        hub = _hubs[key] = make()
    await hub.acquire(on_gap)
    return hub
