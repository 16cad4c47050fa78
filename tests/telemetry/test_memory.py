"""Telemetry on memory://: after a known sequence the counts are exactly what happened."""

from __future__ import annotations

import tracemalloc
import uuid
from pathlib import Path

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from opal_broadcast import BackboneUnavailable, Broadcast, Gap, InvalidOption, _memory, telemetry
from opal_broadcast._hub import _hubs

pytestmark = pytest.mark.anyio


@pytest.fixture
def url() -> str:
    return f"memory://otel-{uuid.uuid4().hex[:8]}"


async def wait_connected(broadcast: Broadcast) -> None:
    with anyio.fail_after(5):
        while broadcast.health().state != "connected":
            await anyio.sleep(0.01)


async def test_publish_and_receive_are_counted_with_the_conventions_attributes(recorded, url):
    """7 publishes, one subscriber: 7 sent, 7 durations, 7 consumed, 7 PRODUCER spans, each
    with messaging.system (the scheme), the operation, the channel and the server address."""
    async with Broadcast(url) as broadcast, broadcast.subscribe("orders") as subscriber:
        for number in range(7):
            await broadcast.publish("orders", str(number))
        for _ in range(7):
            await subscriber.get()
    bus = url.removeprefix("memory://")
    sent = {
        "messaging.system": "memory",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": "orders",
        "server.address": bus,
    }
    assert recorded.total("messaging.client.sent.messages", **sent) == 7
    assert recorded.total("messaging.client.operation.duration", **sent) == 7
    consumed = {
        **sent,
        "messaging.operation.name": "receive",
        "messaging.operation.type": "receive",
    }
    assert recorded.total("messaging.client.consumed.messages", **consumed) == 7
    spans = [s for s in recorded.spans.get_finished_spans() if s.name == "send orders"]
    assert len(spans) == 7
    assert {s.kind.name for s in spans} == {"PRODUCER"}
    assert spans[0].attributes["messaging.destination.name"] == "orders"
    assert spans[0].instrumentation_scope.schema_url.endswith(telemetry.SEMCONV_VERSION)


async def test_a_loss_is_one_gap_one_reconnect_and_one_reconnect_span(recorded, url):
    """A simulated restart of the backbone: gaps{connection_lost} 1, reconnects 1, a reconnect
    duration, and a reconnect span that ended with its attempt count."""
    async with Broadcast(url, reconnect_max_delay=0.05) as broadcast:
        async with broadcast.subscribe("c", keep_going=True) as subscriber:
            _memory.simulate_loss(url, stay_down=False)
            assert isinstance(await subscriber.get(), Gap)
            await wait_connected(broadcast)
    base = {"messaging.system": "memory"}
    assert (
        recorded.total(
            "opal_broadcast.gaps", **base, **{"opal_broadcast.gap.reason": "connection_lost"}
        )
        == 1
    )
    assert recorded.total("opal_broadcast.reconnects", **base) == 1
    assert recorded.total("opal_broadcast.reconnect.duration", **base) == 1
    spans = [s for s in recorded.spans.get_finished_spans() if s.name == "opal_broadcast reconnect"]
    assert len(spans) == 1
    assert spans[0].attributes["opal_broadcast.attempts"] >= 1


async def test_failed_reconnect_attempts_are_events_on_the_reconnect_span(recorded, url):
    """The backbone stays down for a while: each failed attempt is an event naming its error."""
    async with Broadcast(url, reconnect_max_delay=0.05) as broadcast:
        _memory.simulate_loss(url, stay_down=True)
        await anyio.sleep(0.3)
        _memory.restore(url)
        await wait_connected(broadcast)
    (span,) = [
        s for s in recorded.spans.get_finished_spans() if s.name == "opal_broadcast reconnect"
    ]
    failures = [e for e in span.events if e.name == "attempt failed"]
    assert failures, "at least one attempt failed while the bus was down"
    assert failures[0].attributes["error.type"] == "BackboneUnavailable"
    assert span.attributes["opal_broadcast.attempts"] == len(failures) + 1


async def test_a_slow_subscriber_drops_exactly_what_is_counted(recorded, url):
    """A queue of 2 and 5 messages: 3 dropped, counted on the channel."""
    async with Broadcast(url) as broadcast, broadcast.subscribe("c", max_queue=2):
        for number in range(5):
            await broadcast.publish("c", str(number))
    assert (
        recorded.total("opal_broadcast.subscriber.dropped", **{"messaging.destination.name": "c"})
        == 3
    )


async def test_a_failed_publish_carries_its_error_type(recorded, url):
    """Publishing while the backbone is down: the duration and count carry error.type, and the
    span's status is ERROR with the exception recorded."""
    async with Broadcast(url, publish_timeout=0.1, reconnect_max_delay=0.05) as broadcast:
        _memory.simulate_loss(url, stay_down=True)
        try:
            with pytest.raises(BackboneUnavailable):
                await broadcast.publish("c", "lost")
        finally:
            _memory.restore(url)
    failed = {"error.type": "BackboneUnavailable", "messaging.destination.name": "c"}
    assert recorded.total("messaging.client.operation.duration", **failed) == 1
    (span,) = [s for s in recorded.spans.get_finished_spans() if s.name == "send c"]
    assert span.status.status_code.name == "ERROR"
    assert [e.name for e in span.events] == ["exception"]


async def test_gauges_show_the_state_and_the_queues(recorded, url):
    """connection.state is 1 for 'connected'; queue depth gives the deepest and the total."""
    async with Broadcast(url) as broadcast:
        async with broadcast.subscribe("a"), broadcast.subscribe("b"):
            for _ in range(3):
                await broadcast.publish("a", "x")
            await broadcast.publish("b", "y")
            bus = {"server.address": url.removeprefix("memory://")}
            state = recorded.points("opal_broadcast.connection.state", **bus)
            assert [(p.value, p.attributes["opal_broadcast.state"]) for p in state] == [
                (1, "connected")
            ]
            depth = {
                p.attributes["opal_broadcast.aggregation"]: p.value
                for p in recorded.points("opal_broadcast.subscriber.queue.depth", **bus)
            }
            assert depth == {"max": 3, "sum": 4}


async def test_the_probe_round_trip_is_measured(recorded, url):
    """A probe every 20 ms: its durations are recorded, without an error type."""
    async with Broadcast(url, probe_interval=0.02) as broadcast:
        await anyio.sleep(0.2)
        assert broadcast.health().ok
    points = recorded.points("opal_broadcast.probe.duration", **{"messaging.system": "memory"})
    assert sum(p.count for p in points) >= 3
    assert all("error.type" not in p.attributes for p in points)


async def test_channel_names_can_be_left_out_of_every_attribute(url):
    """channel_names="omit": no messaging.destination.name anywhere, nor the name itself."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry.instrument(meter_provider=provider, channel_names="omit")
    try:
        async with Broadcast(url) as broadcast, broadcast.subscribe("secret-tenant-42") as sub:
            await broadcast.publish("secret-tenant-42", "x")
            await sub.get()
        data = reader.get_metrics_data()
        attributes = [
            dict(point.attributes)
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            for point in metric.data.data_points
        ]
        assert attributes
        assert not any("messaging.destination.name" in a for a in attributes)
        assert not any("secret-tenant-42" in str(a) for a in attributes)
    finally:
        telemetry.uninstrument()
        provider.shutdown()


def test_an_unknown_channel_names_setting_is_a_typed_error():
    """channel_names must be 'attribute' or 'omit'; the error names both."""
    with pytest.raises(InvalidOption, match="attribute, omit"):
        telemetry.instrument(channel_names="maybe")


def test_an_unknown_channel_names_variable_is_a_typed_error(monkeypatch):
    """OPAL_BROADCAST_OTEL_CHANNEL_NAMES=all: InvalidOption naming the variable."""
    telemetry.uninstrument()
    monkeypatch.setenv(telemetry.CHANNEL_NAMES_ENV, "all")
    with pytest.raises(InvalidOption, match=telemetry.CHANNEL_NAMES_ENV):
        telemetry.instrument()


async def test_with_the_api_alone_nothing_is_done_per_message(url):
    """No SDK configured and instrument() not called: the hub has no telemetry, and 1,000
    publishes and deliveries allocate nothing in opal-broadcast's telemetry or OpenTelemetry."""
    telemetry.uninstrument()
    async with Broadcast(url) as broadcast, broadcast.subscribe("c", max_queue=2000) as sub:
        (hub,) = [hub for key, hub in _hubs.items() if url in key]
        assert hub.telemetry is None
        tracemalloc.start()
        try:
            for _ in range(1000):
                await broadcast.publish("c", "x")
            for _ in range(1000):
                await sub.get()
            snapshot = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    ours = snapshot.filter_traces(
        [tracemalloc.Filter(True, "*_telemetry.py"), tracemalloc.Filter(True, "*opentelemetry*")]
    )
    assert ours.statistics("filename") == []


GLOBAL_SDK = """
import anyio
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opal_broadcast import Broadcast

reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

async def main():
    async with Broadcast("memory://global-sdk") as broadcast:
        for _ in range(3):
            await broadcast.publish("c", "x")

anyio.run(main)
data = reader.get_metrics_data()
print(sum(
    point.value
    for resource in data.resource_metrics
    for scope in resource.scope_metrics
    for metric in scope.metrics
    if metric.name == "messaging.client.sent.messages"
    for point in metric.data.data_points
))
"""


def test_a_globally_configured_sdk_is_used_without_any_call():
    """An application that sets the SDK's MeterProvider globally gets the metrics, with no
    opal-broadcast call (a fresh process: the global provider can be set once)."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", GLOBAL_SDK], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "3"


async def test_a_backbone_measurement_shows_in_health_and_as_a_gauge(recorded):
    """link.measure(name, value): health().measurements has the latest value, and the gauge
    opal_broadcast.<name> reports it."""
    from opal_broadcast._memory import MemoryConnection
    from tests.core.test_registry import make_plugin

    links = []

    async def open(cls, url, options, link):
        links.append(link)
        return await MemoryConnection.open(url, options, link)

    plugin = make_plugin("measured", open=classmethod(open))
    async with Broadcast(f"measured://m-{uuid.uuid4().hex[:6]}", backend=plugin) as broadcast:
        links[0].measure("measured.queue.usage", 0.125)
        links[0].measure("measured.queue.usage", 0.25)
        assert broadcast.health().measurements == {"measured.queue.usage": 0.25}
        (point,) = recorded.points("opal_broadcast.measured.queue.usage")
        assert point.value == 0.25
        assert point.attributes["messaging.system"] == "measured"


async def test_a_subscribers_processing_time_is_measured(recorded, url):
    """messaging.process.duration: from handing a message out to the next get(); a subscriber
    that spends 50 ms on each of 3 messages records 3 durations of at least 50 ms. No consumer
    span by default."""
    async with Broadcast(url) as broadcast, broadcast.subscribe("work") as subscriber:
        for number in range(3):
            await broadcast.publish("work", str(number))
        for _ in range(3):
            await subscriber.get()
            await anyio.sleep(0.05)
        await broadcast.publish("work", "last")
        await subscriber.get()  # ends the third message's processing
    (point,) = recorded.points(
        "messaging.process.duration", **{"messaging.destination.name": "work"}
    )
    assert point.count == 3
    assert point.min >= 0.05
    assert not [s for s in recorded.spans.get_finished_spans() if s.name.startswith("process")]


async def test_consumer_spans_are_an_option(url):
    """instrument(consumer_spans=True): one CONSUMER span per message handed to a subscriber."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.instrument(tracer_provider=provider, consumer_spans=True)
    try:
        async with Broadcast(url) as broadcast, broadcast.subscribe("work") as subscriber:
            for number in range(3):
                await broadcast.publish("work", str(number))
            for _ in range(3):
                await subscriber.get()
            await broadcast.publish("work", "next")
            await subscriber.get()
    finally:
        telemetry.uninstrument()
        provider.shutdown()
    spans = [s for s in exporter.get_finished_spans() if s.name == "process work"]
    assert len(spans) == 3
    assert {s.kind.name for s in spans} == {"CONSUMER"}
    assert spans[0].attributes["messaging.operation.type"] == "process"


def test_names_are_the_semantic_conventions_own():
    """The metric names and attribute keys used are the constants of the pinned conventions
    (opentelemetry-semantic-conventions), and the pinned version is one that package knows."""
    from opentelemetry.semconv._incubating.attributes import messaging_attributes as messaging
    from opentelemetry.semconv._incubating.metrics import messaging_metrics as metrics
    from opentelemetry.semconv.attributes import error_attributes, server_attributes
    from opentelemetry.semconv.schemas import Schemas

    from opal_broadcast import _telemetry

    source = Path(_telemetry.__file__).read_text()
    for name in (
        metrics.MESSAGING_CLIENT_OPERATION_DURATION,
        metrics.MESSAGING_CLIENT_SENT_MESSAGES,
        metrics.MESSAGING_CLIENT_CONSUMED_MESSAGES,
        metrics.MESSAGING_PROCESS_DURATION,
        messaging.MESSAGING_SYSTEM,
        messaging.MESSAGING_OPERATION_NAME,
        messaging.MESSAGING_OPERATION_TYPE,
        messaging.MESSAGING_DESTINATION_NAME,
        error_attributes.ERROR_TYPE,
        server_attributes.SERVER_ADDRESS,
        server_attributes.SERVER_PORT,
    ):
        assert f'"{name}"' in source, name
    for operation in ("send", "receive", "process"):
        assert messaging.MessagingOperationTypeValues(operation)
    assert _telemetry.SCHEMA_URL in {schema.value for schema in Schemas}


async def test_rejected_payloads_are_counted_per_channel(recorded):
    """link.reject(): opal_broadcast.rejected counts on the payload's channel."""
    from opal_broadcast._memory import MemoryConnection
    from tests.core.test_registry import make_plugin

    links = []

    async def open(cls, url, options, link):
        links.append(link)
        return await MemoryConnection.open(url, options, link)

    plugin = make_plugin("hostile2", open=classmethod(open))
    async with Broadcast(f"hostile2://h-{uuid.uuid4().hex[:6]}", backend=plugin):
        for _ in range(4):
            links[0].reject("c", "garbage")
    assert recorded.total("opal_broadcast.rejected", **{"messaging.destination.name": "c"}) == 4
