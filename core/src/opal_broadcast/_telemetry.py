"""OpenTelemetry metrics and spans for every backbone, third-party ones included (``otel`` extra).

Off, and free, unless ``opentelemetry-api`` is installed and telemetry is on: either
:func:`opal_broadcast.telemetry.instrument` was called, or the application set an SDK
``MeterProvider``/``TracerProvider`` globally before a connection opened. A hub (one shared
connection) decides when it opens; with telemetry off it holds ``None`` and no call is made on
any path. With it on:

- each publish: one PRODUCER span, ``messaging.client.operation.duration`` and
  ``messaging.client.sent.messages`` (with ``error.type`` when it failed);
- every message received from the backbone counts in ``messaging.client.consumed.messages``;
- the project's own instruments, under ``opal_broadcast.``: gaps by reason, reconnects and
  their duration (and a span per reconnect, an event per failed attempt), the connection state,
  subscriber queue depth and dropped messages, the probe's round trip.

Names and attributes follow the OpenTelemetry semantic conventions for messaging, version
:data:`SEMCONV_VERSION` (their status there is *development*). ``messaging.system`` is the URL's
scheme (``redis``, ``postgres``, ``kafka``, a plugin's own): the conventions list no value for
Redis or PostgreSQL. Channel names become ``messaging.destination.name`` unless
``channel_names="omit"`` (high cardinality).
"""

from __future__ import annotations

import os
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ._errors import InvalidOption
from ._url import BackboneURL

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = [
    "SEMCONV_VERSION",
    "Settings",
    "Telemetry",
    "instrument",
    "telemetry_for",
    "uninstrument",
]

#: The version of the OpenTelemetry semantic conventions followed here (messaging: development).
SEMCONV_VERSION = "1.44.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
#: ``attribute`` (the default) or ``omit``: whether channel names become an attribute.
CHANNEL_NAMES_ENV = "OPAL_BROADCAST_OTEL_CHANNEL_NAMES"

ChannelNames = Literal["attribute", "omit"]
_CHANNEL_NAMES: tuple[ChannelNames, ...] = ("attribute", "omit")
#: Seconds; the advisory buckets of messaging.client.operation.duration.
_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass(frozen=True)
class Settings:
    """Where telemetry goes, and how much it says."""

    meter_provider: Any = None
    tracer_provider: Any = None
    channel_names: ChannelNames = "attribute"
    #: A CONSUMER span per message and subscriber, for the time the subscriber spends on it.
    consumer_spans: bool = False


_explicit: Settings | None = None


def instrument(
    *,
    meter_provider: Any = None,
    tracer_provider: Any = None,
    channel_names: str | None = None,
    consumer_spans: bool = False,
) -> None:
    """Turn telemetry on for connections opened from now on (see :mod:`opal_broadcast.telemetry`).

    ``channel_names``: ``"attribute"`` (default) or ``"omit"``. ``consumer_spans``: a CONSUMER
    span per received message and subscriber (off by default: one per message and subscriber).
    """
    global _explicit
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        raise InvalidOption(
            "OpenTelemetry is not installed: pip install 'opal-broadcast[otel]' (and the SDK "
            "and exporters your application uses, e.g. opentelemetry-sdk)."
        ) from None
    global_meter, global_tracer = metrics.get_meter_provider(), trace.get_tracer_provider()
    _explicit = Settings(
        meter_provider or (global_meter if _is_sdk(global_meter) else None),
        tracer_provider or (global_tracer if _is_sdk(global_tracer) else None),
        _channel_names(channel_names),
        consumer_spans,
    )
    _Instruments.reset()


def uninstrument() -> None:
    """Turn telemetry off for connections opened from now on; forget explicit providers."""
    global _explicit
    _explicit = None
    _Instruments.reset()


def telemetry_for(hub: Hub) -> Telemetry | None:
    """The telemetry of a hub that is opening, or None when telemetry is off."""
    settings = _settings()
    if settings is None:
        return None
    instruments = _Instruments.get(settings)
    telemetry = Telemetry(hub, instruments, settings.channel_names == "attribute")
    instruments.hubs.add(hub)
    return telemetry


def _channel_names(value: str | None) -> ChannelNames:
    chosen = value if value is not None else os.environ.get(CHANNEL_NAMES_ENV, "attribute")
    for name in _CHANNEL_NAMES:
        if chosen == name:
            return name
    source = "channel_names" if value is not None else CHANNEL_NAMES_ENV
    raise InvalidOption(f"{source}={chosen!r} must be one of: {', '.join(_CHANNEL_NAMES)}.")


def _settings() -> Settings | None:
    """Explicit settings, or the global SDK providers if the application set any."""
    if _explicit is not None:
        return _explicit
    if "opentelemetry.metrics" not in sys.modules and "opentelemetry.trace" not in sys.modules:
        return None  # the application never imported the API, so it configured no SDK
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        return None
    meter_provider = metrics.get_meter_provider()
    tracer_provider = trace.get_tracer_provider()
    real_meter, real_tracer = _is_sdk(meter_provider), _is_sdk(tracer_provider)
    if not (real_meter or real_tracer):
        return None  # API only: nothing would be recorded, so nothing is done
    return Settings(
        meter_provider if real_meter else None,
        tracer_provider if real_tracer else None,
        _channel_names(None),
    )


def _is_sdk(provider: object) -> bool:
    """Whether a global provider is a real one (the API's defaults record nothing)."""
    return type(provider).__name__ not in (
        "_ProxyMeterProvider",
        "NoOpMeterProvider",
        "ProxyTracerProvider",
        "NoOpTracerProvider",
    )


class _Instruments:
    """The process's instruments for one set of providers, and the hubs they observe."""

    current: _Instruments | None = None

    @classmethod
    def get(cls, settings: Settings) -> _Instruments:
        if cls.current is None or cls.current.settings != settings:
            cls.current = cls(settings)
        return cls.current

    @classmethod
    def reset(cls) -> None:
        cls.current = None

    def __init__(self, settings: Settings) -> None:
        from opal_broadcast import __version__

        self.settings = settings
        self.hubs: weakref.WeakSet[Hub] = weakref.WeakSet()
        #: Backbone measurements that have their gauge.
        self.measured: set[str] = set()
        self.tracer = None
        if settings.tracer_provider is not None:
            self.tracer = settings.tracer_provider.get_tracer(
                "opal_broadcast", __version__, schema_url=SCHEMA_URL
            )
        self.meter = None
        if settings.meter_provider is not None:
            self.meter = meter = settings.meter_provider.get_meter(
                "opal_broadcast", __version__, schema_url=SCHEMA_URL
            )
            self.duration = meter.create_histogram(
                "messaging.client.operation.duration",
                unit="s",
                description="Duration of messaging operation initiated by a producer or consumer client.",
                explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS),
            )
            self.sent = meter.create_counter(
                "messaging.client.sent.messages",
                unit="{message}",
                description="Number of messages producer attempted to send to the broker.",
            )
            self.consumed = meter.create_counter(
                "messaging.client.consumed.messages",
                unit="{message}",
                description="Number of messages that were delivered to the application.",
            )
            self.gaps = meter.create_counter(
                "opal_broadcast.gaps",
                unit="{gap}",
                description="Gaps: messages subscribers may have missed, by reason.",
            )
            self.reconnects = meter.create_counter(
                "opal_broadcast.reconnects",
                unit="{reconnect}",
                description="Connections restored after a loss.",
            )
            self.reconnect_duration = meter.create_histogram(
                "opal_broadcast.reconnect.duration",
                unit="s",
                description="From a loss to every channel subscribed again.",
            )
            self.dropped = meter.create_counter(
                "opal_broadcast.subscriber.dropped",
                unit="{message}",
                description="Messages dropped because a subscriber's queue was full.",
            )
            self.process_duration = meter.create_histogram(
                "messaging.process.duration",
                unit="s",
                description="Duration of processing operation.",
                explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS),
            )
            self.rejected = meter.create_counter(
                "opal_broadcast.rejected",
                unit="{payload}",
                description="Payloads dropped because no opal-broadcast publisher wrote them.",
            )
            self.probe_duration = meter.create_histogram(
                "opal_broadcast.probe.duration",
                unit="s",
                description="Round trip of the liveness probe.",
                explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS),
            )
            meter.create_observable_gauge(
                "opal_broadcast.connection.state",
                [self._observe_state],
                unit="1",
                description="1 for the state each shared connection is in.",
            )
            meter.create_observable_gauge(
                "opal_broadcast.subscriber.queue.depth",
                [self._observe_queues],
                unit="{message}",
                description="Messages waiting in subscribers' queues: the deepest, and in total.",
            )

    def gauge_for(self, name: str) -> None:
        """Create the gauge ``opal_broadcast.<name>`` for a backbone measurement, once."""
        if self.meter is None or name in self.measured:
            return
        self.measured.add(name)

        def observe(options: Any) -> Iterator[Any]:
            from opentelemetry.metrics import Observation

            for hub in list(self.hubs):
                value = hub.measurements.get(name)
                if hub.telemetry is not None and hub.state != "closed" and value is not None:
                    yield Observation(value, hub.telemetry.base)

        self.meter.create_observable_gauge(
            f"opal_broadcast.{name}", [observe], description=f"{name}, as the backbone reports it."
        )

    def _observe_state(self, options: Any) -> Iterator[Any]:
        from opentelemetry.metrics import Observation

        for hub in list(self.hubs):
            if hub.telemetry is not None and hub.state != "closed":
                yield Observation(1, {**hub.telemetry.base, "opal_broadcast.state": hub.state})

    def _observe_queues(self, options: Any) -> Iterator[Any]:
        from opentelemetry.metrics import Observation

        for hub in list(self.hubs):
            if hub.telemetry is None or hub.state == "closed":
                continue
            depths = [s.queued for _, entry in hub.channels for s in entry.subscribers]
            base = hub.telemetry.base
            yield Observation(max(depths, default=0), {**base, "opal_broadcast.aggregation": "max"})
            yield Observation(sum(depths), {**base, "opal_broadcast.aggregation": "sum"})


class Telemetry:
    """One hub's view of the instruments (its base attributes attached)."""

    __slots__ = ("_attempts", "_by_channel", "_instruments", "_reconnect_span", "base", "channels")

    def __init__(self, hub: Hub, instruments: _Instruments, channels: bool) -> None:
        self._instruments = instruments
        self.channels = channels
        self.base = _base_attributes(hub.url)
        self._by_channel: dict[str, dict[str, Any]] = {}
        self._reconnect_span: Any = None
        self._attempts = 0

    @property
    def metered(self) -> bool:
        return self._instruments.meter is not None

    def attributes(self, channel: str, operation: str | None = None) -> dict[str, Any]:
        """The base attributes with the channel's (cached: called per message)."""
        key = f"{operation}\0{channel}"
        cached = self._by_channel.get(key)
        if cached is None:
            cached = dict(self.base)
            if operation is not None:
                cached["messaging.operation.name"] = operation
                cached["messaging.operation.type"] = operation
            if self.channels:
                cached["messaging.destination.name"] = channel
            if len(self._by_channel) >= 10_000:
                self._by_channel.clear()
            self._by_channel[key] = cached
        return cached

    # -- per message -----------------------------------------------------------------------

    async def publish(self, channel: str, attempt: Callable[[], Awaitable[None]]) -> None:
        """Publish through ``attempt``, measured: a PRODUCER span, the duration, the count."""
        instruments = self._instruments
        attributes = self.attributes(channel, "send")
        span = None
        if instruments.tracer is not None:
            from opentelemetry.trace import SpanKind

            name = f"send {channel}" if self.channels else "send"
            span = instruments.tracer.start_span(
                name, kind=SpanKind.PRODUCER, attributes=attributes
            )
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            await attempt()
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._published(attributes, time.perf_counter() - started, error, span)

    def _published(
        self, attributes: dict[str, Any], seconds: float, error: BaseException | None, span: Any
    ) -> None:
        if error is not None:
            attributes = {**attributes, "error.type": _error_type(error)}
        if self.metered:
            self._instruments.duration.record(seconds, attributes)
            self._instruments.sent.add(1, attributes)
        if span is None:
            return
        if error is not None:
            from opentelemetry.trace import StatusCode

            span.set_attribute("error.type", _error_type(error))
            span.record_exception(error)
            span.set_status(StatusCode.ERROR, type(error).__name__)
        span.end()

    def consumed(self, channel: str) -> None:
        if self.metered:
            self._instruments.consumed.add(1, self.attributes(channel, "receive"))

    def measured(self, name: str) -> None:
        """A backbone measurement was reported: make sure it has its gauge."""
        if name not in self._instruments.measured:
            self._instruments.gauge_for(name)

    def processing(self, channel: str) -> Any:
        """A subscriber was handed a message of ``channel``: its CONSUMER span, if any."""
        tracer = self._instruments.tracer
        if tracer is None or not self._instruments.settings.consumer_spans:
            return None
        from opentelemetry.trace import SpanKind

        name = f"process {channel}" if self.channels else "process"
        return tracer.start_span(
            name, kind=SpanKind.CONSUMER, attributes=self.attributes(channel, "process")
        )

    def processed(self, channel: str, seconds: float, span: Any) -> None:
        """The subscriber asked for its next message: the previous one took ``seconds``."""
        if self.metered:
            self._instruments.process_duration.record(seconds, self.attributes(channel, "process"))
        if span is not None:
            span.end()

    def rejected(self, channel: str) -> None:
        if self.metered:
            self._instruments.rejected.add(1, self.attributes(channel))

    def dropped(self, channel: str) -> None:
        if self.metered:
            self._instruments.dropped.add(1, self.attributes(channel))

    # -- per event -------------------------------------------------------------------------

    def gap(self, reason: str) -> None:
        if self.metered:
            self._instruments.gaps.add(1, {**self.base, "opal_broadcast.gap.reason": reason})

    def probed(self, seconds: float, error: BaseException | None) -> None:
        if self.metered:
            attributes = dict(self.base)
            if error is not None:
                attributes["error.type"] = _error_type(error)
            self._instruments.probe_duration.record(seconds, attributes)

    def reconnect_started(self) -> None:
        tracer = self._instruments.tracer
        if tracer is not None and self._reconnect_span is None:
            self._reconnect_span = tracer.start_span(
                "opal_broadcast reconnect", attributes=dict(self.base)
            )
        self._attempts = 0

    def reconnect_failed(self, error: BaseException) -> None:
        self._attempts += 1
        if self._reconnect_span is not None:
            self._reconnect_span.add_event(
                "attempt failed",
                {"opal_broadcast.attempt": self._attempts, "error.type": _error_type(error)},
            )

    def reconnected(self, seconds: float, attempts: int) -> None:
        if self.metered:
            self._instruments.reconnects.add(1, self.base)
            self._instruments.reconnect_duration.record(seconds, self.base)
        span, self._reconnect_span = self._reconnect_span, None
        if span is not None:
            span.set_attribute("opal_broadcast.attempts", attempts)
            span.end()

    def closed(self) -> None:
        span, self._reconnect_span = self._reconnect_span, None
        if span is not None:
            span.set_attribute("opal_broadcast.outcome", "closed before reconnecting")
            span.end()


def _base_attributes(url: BackboneURL) -> dict[str, Any]:
    attributes: dict[str, Any] = {"messaging.system": url.scheme}
    hosts = url.hosts
    if hosts and hosts[0].host:
        attributes["server.address"] = hosts[0].host
        if hosts[0].port is not None:
            attributes["server.port"] = hosts[0].port
    return attributes


def _error_type(error: BaseException) -> str:
    return type(error).__qualname__
