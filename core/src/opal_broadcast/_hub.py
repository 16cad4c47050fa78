"""One shared backbone connection per process, event loop and URL: its users, states and link.

Every ``Broadcast`` on the same URL, options and timings in one event loop joins one :class:`Hub`
(reference-counted: the first ``connect()`` opens it, the last ``disconnect()`` closes it). The hub
owns the connection's state machine and the plugin's connection object; its parts do the rest:
the channel table (:mod:`._channels`), the backbone subscriptions (:mod:`._subscriptions`), the
supervisor that probes and reconnects (:mod:`._supervisor`), the publish path (:mod:`._publish`),
gap accounting (:mod:`._gaps`) and error translation (:mod:`._translate`).

States (:attr:`Hub.state`, also ``health().state``)::

                  open()               lost()                    connect succeeds
      closed ─────────────▶ connecting ───────▶ connected ───────▶ reconnecting ───────────▶ restoring
        ▲                       │                   ▲                 ▲      │                │   │
        │     connect fails     │                   │                 │      └─ fails, backoff┘   │
        └───────────────────────┘                   │                 └──────── lost() ───────────┤
                                                    └──────────── every channel restored ─────────┘

      any state ── last user leaves ──▶ closed           any state ── supervisor dies ──▶ failed

``connected`` and ``restoring`` are *up*: the connection carries traffic, so publishes go through
and a new subscriber subscribes at once; in ``restoring`` the supervisor is also subscribing again
the channels that were live before the loss. Nothing waits while holding a lock that another part
needs: waiting for the hub to be up is waiting on an event, with the caller's own deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn

import anyio

from ._channels import ChannelTable
from ._errors import BackboneUnavailable
from ._events import Gap, Health, State
from ._gaps import GapCallback, GapLog
from ._link import Link
from ._publish import Publisher
from ._registry import Backbone
from ._rejects import RejectLog
from ._subscriptions import Subscriptions
from ._supervisor import Supervisor
from ._system_task import current_async_library
from ._telemetry import Telemetry, telemetry_for
from ._translate import Redactor
from ._tuning import Timings
from ._url import BackboneURL
from ._wrappers import wrappers

__all__ = ["Hub", "open_hub"]

logger = logging.getLogger("opal_broadcast")

#: How many channel names that passed the plugin's check are remembered per connection.
_CHECKED_CHANNELS_KEPT = 10_000

_UP: frozenset[State] = frozenset({"connected", "restoring"})


class Hub:
    """The shared connection. Reached through :func:`open_hub`; released by :meth:`release`."""

    def __init__(
        self,
        key: tuple[Any, ...],
        url: BackboneURL,
        backbone: Backbone,
        options: dict[str, Any],
        timings: Timings,
    ) -> None:
        self.key = key
        self.url = url
        self.backbone = backbone
        self.options = options
        self.timings = timings
        assert backbone.connection is not None, "a loaded backbone"
        #: The plugin's connection class: its classmethods open and check, instances do the rest.
        self.driver = backbone.connection
        #: Channels per subscribe call when restoring (one unless the plugin batches).
        self.batch_size = 1000 if "batch_subscribe" in backbone.capabilities else 1
        self.redact = Redactor(url)
        self.gaps = GapLog()
        self.rejects = RejectLog()
        #: The backbone's own gauges, as the plugin last reported them (``Link.measure``).
        self.measurements: dict[str, float] = {}
        #: OpenTelemetry instruments for this connection, or None (off: see :mod:`._telemetry`).
        self.telemetry: Telemetry | None = None
        self.channels = ChannelTable()
        #: The asyncio event loop this hub lives on (None on trio): known once, because finding
        #: the running loop costs CPython 3.11 a ``getpid()`` system call each time.
        self.loop = asyncio.get_running_loop() if current_async_library() == "asyncio" else None
        self.publisher = Publisher(self)
        self.subscriptions = Subscriptions(self)
        self.supervisor = Supervisor(self)
        self.state: State = "closed"
        #: The plugin's handle for the current connection, and the link it was given.
        self.connection: Any = None
        self.link: Link | None = None
        #: Counts connections made: a call that began on an older one must not count on this one.
        self.generation = 0
        self.resume_state: dict[str, Any] = {}
        #: Channel names that passed the plugin's check (read by the publish hot path).
        self.checked_channels: set[str] = set()
        self.since = time.time()
        self.reconnects = 0
        self.last_error: str | None = None
        self._refs = 0
        self._lifecycle = anyio.Lock()
        self._up = anyio.Event()
        #: Set by :meth:`lost`: the supervisor waits on it.
        self.lost_event = anyio.Event()

    # -- users -----------------------------------------------------------------------------

    async def acquire(self, on_gap: GapCallback | None) -> None:
        """Count one more user, opening the connection for the first."""
        if self._refs:  # already open: joining needs no I/O and no lock (the OPAL pattern)
            self._refs += 1
            self.gaps.add(on_gap)
            return
        async with self._lifecycle:  # held across the first connect only, bounded by its timeout
            if self._refs == 0:
                await self._open()
            self._refs += 1
            self.gaps.add(on_gap)

    async def release(self, on_gap: GapCallback | None) -> None:
        """Count one user less, closing the connection after the last. Never raises."""
        self.gaps.discard(on_gap)
        if self._refs > 1:
            self._refs -= 1
            return
        with anyio.CancelScope(shield=True):
            async with self._lifecycle:
                self._refs -= 1
                if self._refs == 0:
                    await self._close()

    async def _open(self) -> None:
        self.backbone.require_async_library(current_async_library(), self.url.scheme)
        wrappers.autoload()
        self.telemetry = telemetry_for(self)
        self.enter("connecting")
        try:
            await self.connect_once()
        except BaseException:
            self.enter("closed")
            self._forget()
            raise
        _hubs[self.key] = self
        self.enter("connected")
        self.supervisor.start()

    async def _close(self) -> None:
        self.enter("closed")
        if self.telemetry is not None:
            self.telemetry.closed()
        await self.supervisor.stop()
        await self.drop_connection()
        self.channels.close_all()
        self._forget()

    def _forget(self) -> None:
        if _hubs.get(self.key) is self:
            del _hubs[self.key]

    # -- the connection --------------------------------------------------------------------

    async def connect_once(self) -> None:
        """Open a new connection through the plugin, within the connect timeout, or raise typed."""
        if wrappers.connect:
            await wrappers.hook.opal_broadcast_around_connect(url=self.url, attempt=self._connect)
        else:
            await self._connect()

    async def _connect(self) -> None:
        link = Link(self, self.resume_state)
        timeout = self.timings.connect_timeout
        try:
            with anyio.fail_after(timeout):
                connection = await self.driver.open(self.url, dict(self.options), link)
        except BaseException as exc:
            link.active = False
            if isinstance(exc, TimeoutError):
                raise BackboneUnavailable(
                    f"Could not connect to {self.url} within {timeout:g} s. "
                    "Check that the server is up and reachable from here."
                ) from None
            if isinstance(exc, Exception):
                self.redact.reraise(exc, "connecting to")
            raise
        if link.lost_early is not None:
            link.active = False
            await self.disconnect_quietly(connection)
            raise BackboneUnavailable(
                f"The connection to {self.url} was lost while connecting: "
                + self.redact.describe(link.lost_early)
            )
        self.generation += 1
        self.link = link
        self.connection = connection
        # Called as send(connection, ...) on the hot path: the class's function, no bound method.
        self.publisher.send = type(connection).publish

    async def drop_connection(self) -> None:
        """Make the current connection inert and close it (time-boxed, never raises)."""
        link, connection = self.link, self.connection
        self.link = self.connection = None
        if link is not None:
            link.active = False
        if connection is not None:
            await self.disconnect_quietly(connection)

    async def disconnect_quietly(self, connection: Any) -> None:
        """The plugin's disconnect, shielded and time-boxed; its errors are only logged."""
        cancelled = anyio.get_cancelled_exc_class()
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.timings.close_timeout) as box:
            try:
                await connection.close()
            except BaseException as exc:
                # Shielded, only the time box can cancel us here: any other cancellation is the
                # driver's own (aiokafka's stop() re-raises an inner task's), on every Python.
                stray = isinstance(exc, cancelled) and not box.cancel_called
                if not (isinstance(exc, Exception) or stray):
                    raise
                logger.debug("closing %s failed (ignored): %s", self.url, self.redact(repr(exc)))

    # -- states ----------------------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        """The connection carries traffic (``connected`` or ``restoring``)."""
        return self.state in _UP

    def enter(self, state: State) -> None:
        """Move to ``state``; waking whoever waits for the hub to be up (or for good).

        A closed or failed hub leaves that state only by opening again: a reconnect that
        finishes after ``close()`` began must not bring it back.
        """
        if self.state in ("closed", "failed") and state != "connecting":
            if state in ("closed", "failed"):
                self.state = state
            return
        self.state = state
        up = state in _UP
        self.publisher.set_up(up)
        if up or state in ("closed", "failed"):
            self._up.set()
        elif self._up.is_set():
            self._up = anyio.Event()
        if state == "connected":
            self.since = time.time()

    async def wait_up(self) -> None:
        """Return once the hub is up; raise :class:`BackboneUnavailable` if it closed or failed.

        Callers bound the wait with their own deadline.
        """
        while not self.is_up:
            if self.state in ("closed", "failed"):
                raise BackboneUnavailable(self.unavailable("the connection is not coming back"))
            await self._up.wait()

    def lost(self, link: Link, reason: str | BaseException) -> None:
        """The plugin (or the probe, or a failed subscribe) reports the connection gone."""
        if link is not self.link:
            return
        link.active = False
        self.lost_event.set()
        if not self.is_up:
            return  # already reconnecting: the gap is reported
        text = self.redact.describe(reason)
        self.enter("reconnecting")
        self.last_error = text
        logger.warning("lost the connection to %s: %s; reconnecting", self.url, text)
        if self.telemetry is not None:
            self.telemetry.gap("connection_lost")
            self.telemetry.reconnect_started()
        self._gap_everywhere(Gap(None, f"connection to {self.url} lost: {text}"))

    def failed(self, exc: BaseException) -> None:
        """The supervisor died: no more probes or reconnects. Say so everywhere, loudly."""
        if self.state in ("closed", "failed"):
            return
        self.last_error = self.redact.describe(exc)
        self.enter("failed")
        self._forget()  # a new Broadcast on this URL gets a fresh connection
        logger.error(
            "supervision of %s stopped unexpectedly (%s): no more probes or reconnects; "
            "every subscription ends, disconnect and connect again to recover",
            self.url,
            self.last_error,
        )
        if self.telemetry is not None:
            self.telemetry.gap("supervision_failed")
            self.telemetry.closed()
        self._gap_everywhere(Gap(None, f"supervision of {self.url} failed: {self.last_error}"))
        self.channels.close_all()

    def reconnected(self, started: float, attempts: int) -> None:
        """Every channel is live again on the new connection."""
        self.reconnects += 1
        self.enter("connected")
        seconds = time.monotonic() - started
        if self.telemetry is not None:
            self.telemetry.reconnected(seconds, attempts)
        logger.warning(
            "reconnected to %s after %.2f s (%d attempt(s)); %d channel(s) restored",
            self.url,
            seconds,
            attempts,
            self.channels.live_count(),
        )

    # -- gaps ------------------------------------------------------------------------------

    def _gap_everywhere(self, gap: Gap) -> None:
        self.channels.gap_all(gap)
        self.gaps.report(gap)

    def channel_gap(self, channel: str, reason: str) -> None:
        """A plugin dropped messages of one channel but the connection is fine."""
        gap = Gap(channel, self.redact(reason))
        if self.channels.get(channel) is None:
            return
        logger.warning("gap on %r at %s: %s", channel, self.url, gap.reason)
        if self.telemetry is not None:
            self.telemetry.gap("channel")
        self.channels.gap(channel, gap)
        self.gaps.report(gap)

    # -- checks and reports ----------------------------------------------------------------

    def check_channel(self, channel: str) -> None:
        """Let the plugin refuse a channel name before any I/O (each name is checked once)."""
        if channel in self.checked_channels:
            return
        self.driver.check_channel(self.url, self.options, channel)
        if len(self.checked_channels) >= _CHECKED_CHANNELS_KEPT:
            self.checked_channels.clear()
        self.checked_channels.add(channel)

    def unavailable(self, what: str) -> str:
        """Why an operation gave up: ``what``, the state and the last error."""
        detail = f" Last error: {self.last_error}." if self.last_error else ""
        return f"{self.url} is unavailable ({self.state}): {what}.{detail}"

    def reraise(self, exc: Exception, doing: str) -> NoReturn:
        """Raise ``exc`` typed and masked (see :class:`Redactor`)."""
        self.redact.reraise(exc, doing)

    def health(self) -> Health:
        """A snapshot of this connection."""
        return Health(
            url=str(self.url),
            state=self.state,
            since=self.since,
            reconnects=self.reconnects,
            gaps=self.gaps.count,
            last_gap=self.gaps.last,
            last_error=self.last_error,
            channels=self.channels.live_count(),
            subscribers=self.channels.subscriber_count(),
            rejected=self.rejects.count,
            rejected_by_channel=self.rejects.snapshot(),
            measurements=dict(self.measurements),
        )


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
