"""Telemetry on each real backbone: publish N, subscribe, a server restart, a slow subscriber
dropping M; the metrics and spans say exactly that, with ``messaging.system`` the URL's scheme."""

from __future__ import annotations

import uuid
from types import ModuleType

import anyio
import pytest

from opal_broadcast import BackboneURL, Broadcast, Event, Gap

pytestmark = pytest.mark.anyio

FAST = {"probe_interval": 0.5, "probe_timeout": 2.0, "reconnect_max_delay": 0.5}
SERVICE = {"redis": "redis", "postgresql": "postgres", "kafka": "kafka"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the plugins' drivers are asyncio's


@pytest.fixture(params=["redis", "postgres", "kafka"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


async def until(predicate, timeout: float = 30) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.05)


async def next_event(subscriber, timeout: float = 20):
    with anyio.fail_after(timeout):
        return await subscriber.get()


async def test_counts_and_spans_across_a_server_restart(recorded, url, services: ModuleType):
    """5 publishes before a restart and 3 after, one subscriber, and a subscriber with a queue
    of 2 that never reads: sent 8, consumed 8 (the slow one's copies count once, as received),
    dropped 6, one connection_lost gap, one reconnect with its span."""
    scheme = BackboneURL.parse(url).scheme
    channel = f"otel-{uuid.uuid4().hex[:8]}"
    attributes = {"messaging.system": scheme, "messaging.destination.name": channel}
    async with Broadcast(url, **FAST) as broadcast:
        async with (
            broadcast.subscribe(channel, keep_going=True) as reader,
            broadcast.subscribe(channel, keep_going=True, max_queue=2),
        ):
            for number in range(5):
                await broadcast.publish(channel, f"before {number}")
            assert [(await next_event(reader)).message for _ in range(5)] == [
                f"before {n}" for n in range(5)
            ]
            try:
                await services.arestart(SERVICE[scheme])
                assert isinstance(await next_event(reader), Gap)
            finally:
                with anyio.CancelScope(shield=True):
                    await services.astart(SERVICE[scheme])
            await until(lambda: broadcast.health().state == "connected")
            received: list[str] = []
            for number in range(3):
                text = f"after {number}"
                await broadcast.publish(channel, text)
                event = await next_event(reader)
                assert event == Event(channel, text)
                received.append(text)
    sent = recorded.total("messaging.client.sent.messages", **attributes)
    failed = recorded.total(
        "messaging.client.sent.messages", **attributes, **{"error.type": "BackboneUnavailable"}
    )
    assert (sent, failed) == (8, 0)
    assert recorded.total("messaging.client.consumed.messages", **attributes) == 8
    assert recorded.total("opal_broadcast.subscriber.dropped", **attributes) == 6
    base = {"messaging.system": scheme}
    gaps = recorded.total(
        "opal_broadcast.gaps", **base, **{"opal_broadcast.gap.reason": "connection_lost"}
    )
    assert gaps == recorded.total("opal_broadcast.reconnects", **base) == 1
    spans = recorded.spans.get_finished_spans()
    assert len([s for s in spans if s.name == f"send {channel}"]) == 8
    assert len([s for s in spans if s.name == "opal_broadcast reconnect"]) == 1
