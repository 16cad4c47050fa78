"""OpenTelemetry's SDK with an in-memory metric reader and span exporter, turned on per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opal_broadcast import telemetry


@dataclass
class Recorded:
    """What the SDK recorded: metric points by name, and finished spans."""

    reader: InMemoryMetricReader
    spans: InMemorySpanExporter

    def points(self, name: str, **attributes: Any) -> list[Any]:
        """The data points of metric ``name`` whose attributes include ``attributes``."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        if all(point.attributes.get(k) == v for k, v in attributes.items()):
                            found.append(point)
        return found

    def total(self, name: str, **attributes: Any) -> float:
        """The sum of a counter's points (or a histogram's counts) matching ``attributes``."""
        points = self.points(name, **attributes)
        return sum(getattr(p, "value", None) if hasattr(p, "value") else p.count for p in points)

    def names(self) -> set[str]:
        data = self.reader.get_metrics_data()
        return {
            metric.name
            for resource in (data.resource_metrics if data else ())
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    """Telemetry on, into an in-memory reader and exporter of this test's own."""
    reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.instrument(meter_provider=meter_provider, tracer_provider=tracer_provider)
    try:
        yield Recorded(reader, spans)
    finally:
        telemetry.uninstrument()
        meter_provider.shutdown()
        tracer_provider.shutdown()
