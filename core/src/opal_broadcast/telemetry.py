"""OpenTelemetry metrics and spans for opal-broadcast (``pip install 'opal-broadcast[otel]'``).

Nothing to do in an application that configures the OpenTelemetry SDK globally
(``metrics.set_meter_provider(...)``, ``trace.set_tracer_provider(...)``, or the
``opentelemetry-instrument`` launcher) before its first ``connect()``: connections opened after that
are measured. Otherwise, or to choose the providers::

    from opal_broadcast import telemetry

    telemetry.instrument(meter_provider=provider, tracer_provider=tracers)

With the API alone (no SDK configured) nothing is recorded and nothing is done: the publish and
delivery paths are the uninstrumented ones. ``docs/observability.md`` lists every metric, span and
attribute, and how to scrape them with Prometheus.
"""

from ._telemetry import CHANNEL_NAMES_ENV, SEMCONV_VERSION, instrument, uninstrument

__all__ = ["CHANNEL_NAMES_ENV", "SEMCONV_VERSION", "instrument", "uninstrument"]
