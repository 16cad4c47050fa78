"""The public ``Broadcast`` class: broadcaster's API over a shared, supervised connection."""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, overload

from . import _publish
from ._broadcaster_backend import is_broadcaster_backend
from ._errors import ConfigurationError, InvalidOption, MissingURL, NotConnectedError
from ._events import Event, Gap, Health
from ._gaps import GapCallback
from ._hub import Hub, open_hub
from ._publish import check_channel_name
from ._registry import Backbone, default_registry
from ._subscriber import MeasuredSubscriber, QueueBound, Subscriber
from ._system_task import current_loop
from ._tuning import GapPolicy, Timings, tuning
from ._url import BackboneURL
from ._wrappers import wrappers

__all__ = ["Broadcast", "Subscription"]

ENV_VAR = "OPAL_BROADCAST_URI"

_T = TypeVar("_T", Event, "Event | Gap")
_B = TypeVar("_B", bound="Broadcast")


class Broadcast:
    """A broadcast channel over the backbone named by ``url``.

    Drop-in for ``broadcaster.Broadcast``::

        async with Broadcast("redis://localhost:6379") as broadcast:
            async with broadcast.subscribe("updates") as subscriber:
                await broadcast.publish("updates", "hello")
                event = await subscriber.get()   # Event(channel='updates', message='hello')

    Creating one does no I/O, but checks everything that needs none: a malformed URL, an unknown
    scheme (``UnknownScheme``, a ``ValueError`` as broadcaster's was) and options the backbone
    refuses raise here, not at ``connect()``. Every ``Broadcast`` on the same URL (and options) in one process and
    event loop shares one backbone connection, reference-counted, so a new instance per publish
    costs almost nothing while another instance holds the connection.

    ``backend``: an object with encode/broadcaster's backend interface (``connect``,
    ``disconnect``, ``subscribe``, ``unsubscribe``, ``publish``, ``next_published``; the URL is
    then optional), a plugin object, or the name/distribution of an installed plugin, to use
    instead of looking the scheme up. ``on_gap``: called with a :class:`Gap` whenever the connection is lost
    (messages may have been missed). ``gap_policy``: what this instance's subscribers do at a gap,
    ``"end"`` (default: the iteration ends with :class:`SubscriptionGap`; subscribe again and
    resync) or ``"continue"`` (the iteration carries on; the gap is logged at WARNING, counted in
    ``health()`` and told to ``on_gap``), for consumers that never subscribe again. ``share_connection=False`` gives this instance a connection of
    its own (tests, benchmarks). Other keyword ``options`` go to the backbone's plugin, which
    refuses unknown ones.

    Timings, in seconds: ``connect_timeout`` (10), ``publish_timeout`` (5), ``probe_interval`` (5)
    and ``probe_timeout`` (5) for the liveness probe, ``reconnect_max_delay`` (5), the cap of the
    reconnection backoff. Each subscriber's queue is bounded by ``max_queue`` (10,000 messages) and
    ``max_queue_bytes`` (32 MiB of payload): the defaults of ``subscribe()``.
    Each but ``connect_timeout`` (and ``gap_policy`` too) can also be given in the URL's query
    (``redis://cache/0?publish_timeout=2``), which is how ``OPAL_BROADCAST_URI`` sets them; a
    keyword argument wins over the query.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        backend: object | str | None = None,
        on_gap: GapCallback | None = None,
        gap_policy: GapPolicy | None = None,
        connect_timeout: float | None = None,
        publish_timeout: float | None = None,
        probe_interval: float | None = None,
        probe_timeout: float | None = None,
        reconnect_max_delay: float | None = None,
        max_queue: int | None = None,
        max_queue_bytes: int | None = None,
        share_connection: bool = True,
        **options: Any,
    ) -> None:
        if url is None and is_broadcaster_backend(backend):
            url = f"backend://{type(backend).__name__}"
        if url is None:
            raise MissingURL(
                "Either `url` or `backend` must be provided. For example: "
                "Broadcast('redis://localhost:6379'), Broadcast.from_env() to read "
                "OPAL_BROADCAST_URI, or Broadcast(backend=obj) with an encode/broadcaster "
                "backend object."
            )
        self._url, settings, self._gap_policy = tuning(
            BackboneURL.parse(url),
            {
                "connect_timeout": connect_timeout,
                "publish_timeout": publish_timeout,
                "probe_interval": probe_interval,
                "probe_timeout": probe_timeout,
                "reconnect_max_delay": reconnect_max_delay,
                "max_queue": max_queue,
                "max_queue_bytes": max_queue_bytes,
            },
            gap_policy,
        )
        self._backend = backend
        self._backbone = self._resolve()
        check_url = getattr(self._backbone.connection, "check_url", None)
        if check_url is not None:
            check_url(self._url, options)
        self._on_gap = on_gap
        self._publish_timeout = settings["publish_timeout"]
        self._bound = QueueBound(int(settings["max_queue"]), int(settings["max_queue_bytes"]))
        self._options = options
        # Everything but the event loop and the plugin that decides which hub this joins.
        self._sharing_key = (
            self._url.reveal(),
            (
                settings["connect_timeout"],
                settings["probe_interval"],
                settings["probe_timeout"],
                settings["reconnect_max_delay"],
            ),
            _freeze(options) if options else (),
            True if share_connection else object(),
        )
        self._hub: Hub | None = None
        self._subscribers: set[Subscriber[Any]] = set()

    @classmethod
    def from_env(cls, variable: str = ENV_VAR, **kwargs: Any) -> Broadcast:
        """A ``Broadcast`` on the URL in the environment variable (``OPAL_BROADCAST_URI``)."""
        url = os.environ.get(variable, "").strip()
        if not url:
            raise ConfigurationError(
                f"The environment variable {variable} is not set: set it to the broadcast URL, "
                "for example memory:// or redis://localhost:6379."
            )
        return cls(url, **kwargs)

    @property
    def url(self) -> str:
        """The URL with its password masked."""
        return str(self._url)

    @property
    def is_connected(self) -> bool:
        """True between ``connect()`` and ``disconnect()``."""
        return self._hub is not None

    def health(self) -> Health:
        """A snapshot of the shared connection: state, reconnects, gaps, last error."""
        return self._require_hub().health()

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open (or join) the shared connection. Idempotent. Raises typed errors, promptly."""
        if self._hub is not None:
            return
        backbone = self._backbone
        key = (current_loop(), backbone.name, *self._sharing_key)
        self._hub = await open_hub(
            key,
            lambda: Hub(key, self._url, backbone, self._options, Timings(*self._sharing_key[1])),
            self._on_gap,
        )

    async def disconnect(self) -> None:
        """Leave the shared connection; end this instance's subscriptions. Idempotent, never raises."""
        hub, self._hub = self._hub, None
        if hub is None:
            return
        for subscriber in list(self._subscribers):
            subscriber.close()
        self._subscribers.clear()
        await hub.release(self._on_gap)

    async def __aenter__(self: _B) -> _B:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    # -- messages --------------------------------------------------------------------------

    publish = _publish.publish  # the publish path lives in one place: see _publish

    @overload
    def subscribe(
        self,
        channel: str,
        *,
        keep_going: Literal[False] = ...,
        max_queue: int | None = ...,
        max_queue_bytes: int | None = ...,
    ) -> Subscription[Event]: ...

    @overload
    def subscribe(
        self,
        channel: str,
        *,
        keep_going: Literal[True],
        max_queue: int | None = ...,
        max_queue_bytes: int | None = ...,
    ) -> Subscription[Event | Gap]: ...

    def subscribe(
        self,
        channel: str,
        *,
        keep_going: bool = False,
        max_queue: int | None = None,
        max_queue_bytes: int | None = None,
    ) -> Subscription[Any]:
        """An async context manager whose value iterates the events of ``channel``.

        The subscription is live on the backbone when the context is entered: a message published
        after that, from any process, reaches it. At a gap (backbone lost, subscriber too slow)
        the iteration raises :class:`SubscriptionGap`; subscribe again to resume. With
        ``keep_going=True`` it yields :class:`Gap` markers instead and carries on.

        ``max_queue`` and ``max_queue_bytes`` bound this subscriber's queue (default: the
        ``Broadcast``'s); a subscriber that falls behind either bound has a gap with the exact
        count of the messages it missed.
        """
        check_channel_name(channel)
        bound = self._bound
        if max_queue is not None or max_queue_bytes is not None:
            bound = QueueBound(
                _positive("max_queue", max_queue, bound.messages),
                _positive("max_queue_bytes", max_queue_bytes, bound.bytes),
            )
        return Subscription(self, channel, keep_going, bound)

    # -- internals -------------------------------------------------------------------------

    def _require_hub(self) -> Hub:
        if self._hub is None:
            raise NotConnectedError(
                f"Broadcast({self.url!r}) is not connected: call 'await broadcast.connect()' "
                "first, or use 'async with Broadcast(url) as broadcast'."
            )
        return self._hub

    def _resolve(self) -> Backbone:
        registry = default_registry()
        if self._backend is None or isinstance(self._backend, str):
            return registry.resolve(self._url.scheme, pin=self._backend)
        if is_broadcaster_backend(self._backend):
            return registry.adopt_broadcaster_backend(self._backend)
        return registry.adopt(self._backend)

    def __repr__(self) -> str:
        state = self._hub.health().state if self._hub is not None else "disconnected"
        return f"Broadcast({self.url!r}, state={state!r})"


class Subscription(Generic[_T]):
    """``async with broadcast.subscribe(channel) as subscriber``: attaches on enter, detaches on exit.

    The exit is shielded and time-boxed, so cancelling the task that reads the subscriber leaves
    nothing behind.
    """

    def __init__(
        self, broadcast: Broadcast, channel: str, keep_going: bool, bound: QueueBound
    ) -> None:
        self._broadcast = broadcast
        self._channel = channel
        self._keep_going = keep_going
        self._bound = bound
        self._subscriber: Subscriber[_T] | None = None
        self._hub: Hub | None = None

    async def __aenter__(self) -> Subscriber[_T]:
        hub = self._broadcast._require_hub()
        hub.check_channel(self._channel)
        kind = Subscriber if hub.telemetry is None else MeasuredSubscriber
        subscriber: Subscriber[_T] = kind(
            self._channel,
            bound=self._bound,
            keep_going=self._keep_going,
            detach=hub.subscriptions.detach,
            loop=hub.loop,
            continues=self._broadcast._gap_policy == "continue",
        )
        subscriber.telemetry = hub.telemetry
        if wrappers.subscribe:
            await wrappers.hook.opal_broadcast_around_subscribe(
                url=hub.url,
                channel=self._channel,
                attempt=lambda: hub.subscriptions.add(subscriber, hub.timings.connect_timeout),
            )
        else:
            await hub.subscriptions.add(subscriber, hub.timings.connect_timeout)
        self._broadcast._subscribers.add(subscriber)
        self._subscriber, self._hub = subscriber, hub
        return subscriber

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        subscriber, hub = self._subscriber, self._hub
        if subscriber is None or hub is None:
            return
        self._broadcast._subscribers.discard(subscriber)
        await hub.subscriptions.remove(subscriber)


def _positive(name: str, value: int | None, default: int) -> int:
    """``value`` (a whole number above 0), or ``default`` for None."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidOption(f"{name}={value!r} must be a whole number above 0.")
    return value


def _freeze(options: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name, repr(value)) for name, value in options.items()))
