"""The conformance suite every backbone plugin runs against its real server.

Subclass :class:`BackboneConformance` in a test module, provide ``backbone_url`` and ``outage``
(and optionally ``anyio_backend``, ``broadcast_options``), and pytest collects every test below.
The opt-in suites (a frozen link, access control) are in ``_opt_in``.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest

from .. import (
    BackboneUnavailable,
    Broadcast,
    Event,
    Gap,
    InvalidChannel,
    SubscriptionGap,
)
from ._faults import DEADLINE, BackboneOutage
from ._faults import next_event as _next_event
from ._faults import until_healthy as _until_healthy
from ._resources import nothing_left_open

__all__ = ["BackboneConformance"]


def _as_bytes(message: str | bytes) -> bytes:
    return message.encode() if isinstance(message, str) else message


class BackboneConformance:
    """What every backbone must do. Override ``backbone_url``; see the module docstring."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def backbone_url(self) -> str:
        """The URL of a running backbone (override this)."""
        pytest.fail("Override the 'backbone_url' fixture in your BackboneConformance subclass.")

    @pytest.fixture
    def outage(self) -> BackboneOutage:
        """Something that takes the backbone away and brings it back (override this)."""
        pytest.fail(
            "Override the 'outage' fixture in your BackboneConformance subclass: loss and "
            "recovery are part of the contract (see BackboneOutage)."
        )

    @pytest.fixture
    def broadcast_options(self) -> dict[str, Any]:
        """Keyword options for every ``Broadcast`` the suite makes (short timeouts by default)."""
        return {
            "publish_timeout": 3.0,
            "connect_timeout": 5.0,
            "probe_interval": 0.5,
            "probe_timeout": 2.0,
            "reconnect_max_delay": 0.5,
        }

    @pytest.fixture
    def invalid_channels(self) -> list[str]:
        """Channel names this backbone refuses (override to add yours; the empty name is built in)."""
        return []

    @pytest.fixture
    def silent_url(self, backbone_url: str) -> Iterator[str]:
        """``backbone_url`` pointed at a server that accepts TCP connections and never answers.

        The default replaces the URL's host and port with a local listening socket nobody
        accepts on (the kernel completes the handshake; nothing is ever read or written).
        Override it for a URL without a host and port (a unix socket).
        """
        parts = urlsplit(backbone_url)
        if not parts.hostname:
            pytest.fail("Override the 'silent_url' fixture: the backbone URL has no host:port.")
        listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        port = listener.getsockname()[1]
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
        try:
            yield urlunsplit(parts._replace(netloc=netloc))
        finally:
            listener.close()

    @pytest.fixture
    def channel(self) -> str:
        """A channel name no other test uses (the backbone may be shared between runs)."""
        return f"conformance-{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def make_broadcast(
        self, backbone_url: str, broadcast_options: dict[str, Any]
    ) -> Callable[..., Broadcast]:
        """``make_broadcast(**overrides)``: a ``Broadcast`` on the backbone under test."""

        def make(**overrides: Any) -> Broadcast:
            return Broadcast(backbone_url, **{**broadcast_options, **overrides})

        return make

    # -- delivery -----------------------------------------------------------------------

    async def test_round_trip(self, make_broadcast: Callable[..., Broadcast], channel: str) -> None:
        """A message published after subscribe() reaches the subscriber unchanged."""
        async with make_broadcast() as broadcast, broadcast.subscribe(channel) as subscriber:
            await broadcast.publish(channel, "hello")
            assert await _next_event(subscriber) == Event(channel, "hello")

    async def test_subscription_is_live_for_another_connection(
        self, make_broadcast: Callable[..., Broadcast], channel: str
    ) -> None:
        """Once the context is entered, a publish from a separate connection reaches it."""
        async with make_broadcast() as listener, make_broadcast(share_connection=False) as sender:
            async with listener.subscribe(channel) as subscriber:
                await sender.publish(channel, "first")
                assert (await _next_event(subscriber)).message == "first"

    async def test_fan_out_to_every_subscriber(
        self, make_broadcast: Callable[..., Broadcast], channel: str
    ) -> None:
        """Every subscriber, on the shared connection and on another one, gets every message."""
        async with AsyncExitStack() as stack:
            shared = await stack.enter_async_context(make_broadcast())
            separate = await stack.enter_async_context(make_broadcast(share_connection=False))
            subscribers = [
                await stack.enter_async_context(b.subscribe(channel))
                for b in (shared, shared, shared, separate, separate)
            ]
            for i in range(3):
                await shared.publish(channel, f"m{i}")
            for subscriber in subscribers:
                got = [(await _next_event(subscriber)).message for _ in range(3)]
                assert got == ["m0", "m1", "m2"]

    async def test_channels_are_isolated(
        self, make_broadcast: Callable[..., Broadcast], channel: str
    ) -> None:
        """A subscriber of one channel never receives another channel's messages."""
        other = channel + "-other"
        async with make_broadcast() as broadcast, broadcast.subscribe(channel) as subscriber:
            await broadcast.publish(other, "not for you")
            await broadcast.publish(channel, "for you")
            assert await _next_event(subscriber) == Event(channel, "for you")

    async def test_unsubscribing_one_channel_keeps_the_others(
        self, make_broadcast: Callable[..., Broadcast], channel: str
    ) -> None:
        """Leaving channel A leaves B subscribed; A can be subscribed again."""
        first, second = channel + "-a", channel + "-b"
        async with make_broadcast() as broadcast, broadcast.subscribe(second) as keeper:
            async with broadcast.subscribe(first) as leaver:
                await broadcast.publish(first, "a1")
                assert (await _next_event(leaver)).message == "a1"
            await broadcast.publish(second, "b1")
            assert await _next_event(keeper) == Event(second, "b1")
            async with broadcast.subscribe(first) as again:
                await broadcast.publish(first, "a2")
                assert (await _next_event(again)).message == "a2"

    async def test_per_publisher_order(
        self, make_broadcast: Callable[..., Broadcast], channel: str
    ) -> None:
        """Messages from one publisher arrive in publish order."""
        count = 200
        async with make_broadcast() as broadcast, broadcast.subscribe(channel) as subscriber:
            for i in range(count):
                await broadcast.publish(channel, str(i))
            got = [int((await _next_event(subscriber)).message) for _ in range(count)]
        assert got == list(range(count))

    @pytest.mark.parametrize(
        "payload",
        [
            "",
            " ",
            "héllo wörld",
            "€" * 100,
            "emoji 🎉 and 𝄞",
            '{"json": [1, 2.5, null]}',
            "a\nb\tc",
        ],
        ids=["empty", "space", "latin1", "euro", "astral", "json", "controls"],
    )
    async def test_text_payloads_round_trip_exactly(
        self, make_broadcast: Callable[..., Broadcast], channel: str, payload: str
    ) -> None:
        """Unicode, empty and control-character text arrives exactly as sent."""
        async with make_broadcast() as broadcast, broadcast.subscribe(channel) as subscriber:
            await broadcast.publish(channel, payload)
            event = await _next_event(subscriber)
        assert _as_bytes(event.message) == payload.encode()

    async def test_bytes_payloads_are_accepted(
        self, make_broadcast: Callable[..., Broadcast], channel: str
    ) -> None:
        """A bytes message is delivered with the same bytes (as bytes, or as text if UTF-8)."""
        payload = "bytes ✓".encode()
        async with make_broadcast() as broadcast, broadcast.subscribe(channel) as subscriber:
            await broadcast.publish(channel, payload)
            assert _as_bytes((await _next_event(subscriber)).message) == payload

    async def test_concurrent_publishers(
        self, make_broadcast: Callable[..., Broadcast], channel: str
    ) -> None:
        """Many tasks publishing at once: nothing lost, each publisher's order kept."""
        publishers, each = 10, 20
        async with make_broadcast() as broadcast, broadcast.subscribe(channel) as subscriber:

            async def publish_all(publisher: int) -> None:
                for i in range(each):
                    await broadcast.publish(channel, f"{publisher}:{i}")

            async with anyio.create_task_group() as tasks:
                for publisher in range(publishers):
                    tasks.start_soon(publish_all, publisher)
            received: dict[int, list[int]] = {p: [] for p in range(publishers)}
            for _ in range(publishers * each):
                sender, seq = str((await _next_event(subscriber)).message).split(":")
                received[int(sender)].append(int(seq))
        assert received == {p: list(range(each)) for p in range(publishers)}

    async def test_several_instances_share_a_url(
        self, make_broadcast: Callable[..., Broadcast], channel: str
    ) -> None:
        """Instances on one URL see each other, including a new instance per publish (OPAL)."""
        async with make_broadcast() as listener, listener.subscribe(channel) as subscriber:
            for i in range(20):
                async with make_broadcast() as publisher:
                    await publisher.publish(channel, str(i))
            got = [int((await _next_event(subscriber)).message) for _ in range(20)]
        assert got == list(range(20))

    async def test_invalid_channels_are_refused(
        self, make_broadcast: Callable[..., Broadcast], invalid_channels: list[str]
    ) -> None:
        """Names the backbone cannot carry are InvalidChannel, for publish and for subscribe."""
        async with make_broadcast() as broadcast:
            for name in ["", *invalid_channels]:
                with pytest.raises(InvalidChannel):
                    await broadcast.publish(name, "x")
                with pytest.raises(InvalidChannel):
                    async with broadcast.subscribe(name):
                        pass

    # -- connecting -----------------------------------------------------------------------

    @pytest.mark.parametrize("delay", [0.0, 0.001, 0.005, 0.02, 0.1, 0.5])
    async def test_a_cancelled_connect_leaves_nothing_open(
        self, make_broadcast: Callable[..., Broadcast], delay: float
    ) -> None:
        """A connect cancelled at any point (here after ``delay`` s) leaves no socket, thread or
        unclosed object behind, and the next connect works."""
        async with nothing_left_open():
            for _ in range(3):
                broadcast = make_broadcast(share_connection=False)
                with anyio.move_on_after(delay):
                    await broadcast.connect()
                await broadcast.disconnect()
        async with make_broadcast(share_connection=False) as broadcast:
            await broadcast.publish("conformance-after-cancel", "fine")

    async def test_a_connect_without_answer_times_out_typed(
        self, silent_url: str, broadcast_options: dict[str, Any]
    ) -> None:
        """A server that accepts and never answers: BackboneUnavailable after connect_timeout,
        with nothing left open."""
        async with nothing_left_open():
            broadcast = Broadcast(silent_url, **{**broadcast_options, "connect_timeout": 1.0})
            started = time.monotonic()
            try:
                with pytest.raises(BackboneUnavailable):
                    await broadcast.connect()
            finally:
                await broadcast.disconnect()
            assert time.monotonic() - started < 1.0 + 2.0

    # -- cancellation -------------------------------------------------------------------

    async def test_cancel_while_receiving(
        self, make_broadcast: Callable[..., Broadcast], channel: str
    ) -> None:
        """Cancelling a task waiting for an event exits its context cleanly; others unaffected."""
        async with make_broadcast() as broadcast, broadcast.subscribe(channel) as survivor:

            async def wait_forever() -> None:
                async with broadcast.subscribe(channel) as doomed:
                    await doomed.get()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(wait_forever)
                with anyio.fail_after(DEADLINE):
                    while broadcast.health().subscribers < 2:  # noqa: ASYNC110 - a snapshot
                        await anyio.sleep(0.01)
                tasks.cancel_scope.cancel()
            assert broadcast.health().subscribers == 1
            await broadcast.publish(channel, "after")
            assert (await _next_event(survivor)).message == "after"

    async def test_cancel_while_publishing(
        self, make_broadcast: Callable[..., Broadcast], channel: str
    ) -> None:
        """A publish cancelled mid-flight leaves the connection usable."""
        async with make_broadcast() as broadcast, broadcast.subscribe(channel) as subscriber:
            for _ in range(5):
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await broadcast.publish(channel, "maybe")
                with anyio.move_on_after(0.0005):
                    await broadcast.publish(channel, "maybe")
            await broadcast.publish(channel, "certain")
            with anyio.fail_after(DEADLINE):
                while (await subscriber.get()).message != "certain":
                    pass

    # -- loss and recovery --------------------------------------------------------------

    @asynccontextmanager
    async def _outage(self, outage: BackboneOutage) -> AsyncIterator[BackboneOutage]:
        try:
            yield outage
        finally:
            with anyio.CancelScope(shield=True):
                await outage.restore()

    async def test_loss_ends_a_default_subscriber_then_subscribing_again_works(
        self,
        make_broadcast: Callable[..., Broadcast],
        channel: str,
        outage: BackboneOutage,
    ) -> None:
        """A lost backbone ends the iteration with SubscriptionGap; after it returns, all works."""
        gaps: list[Gap] = []
        async with self._outage(outage) as fault:
            async with make_broadcast(on_gap=gaps.append) as broadcast:
                async with broadcast.subscribe(channel) as subscriber:
                    await broadcast.publish(channel, "before")
                    assert (await _next_event(subscriber)).message == "before"
                    await fault.interrupt()
                    with pytest.raises(SubscriptionGap) as caught:
                        await _next_event(subscriber)
                    assert subscriber.gap is caught.value.gap
                with pytest.raises(BackboneUnavailable), anyio.fail_after(DEADLINE):
                    await broadcast.publish(channel, "during")
                await fault.restore()
                await _until_healthy(broadcast)
                async with broadcast.subscribe(channel) as again:
                    await broadcast.publish(channel, "after")
                    assert (await _next_event(again)).message == "after"
                health = broadcast.health()
        assert gaps, "the gap callback was not called"
        assert health.reconnects >= 1
        assert health.gaps >= 1

    async def test_loss_is_a_marker_for_a_subscriber_that_keeps_going(
        self,
        make_broadcast: Callable[..., Broadcast],
        channel: str,
        outage: BackboneOutage,
    ) -> None:
        """With keep_going=True the subscriber sees a Gap marker, then receives again."""
        async with self._outage(outage) as fault, make_broadcast() as broadcast:
            async with broadcast.subscribe(channel, keep_going=True) as subscriber:
                await fault.interrupt()
                marker = await _next_event(subscriber)
                assert isinstance(marker, Gap)
                assert marker.channel == channel
                await fault.restore()
                await _until_healthy(broadcast)
                await broadcast.publish(channel, "resumed")
                event = await _next_event(subscriber)
                assert isinstance(event, Event)
                assert event.message == "resumed"
