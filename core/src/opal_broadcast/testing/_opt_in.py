"""The opt-in conformance suites: a frozen link, and access control per channel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from .. import AccessDenied, Broadcast, Event, Gap
from ._faults import DEADLINE, BackboneFreeze
from ._faults import next_event as _next_event
from ._faults import until_healthy as _until_healthy

__all__ = ["AccessControlConformance", "FrozenLinkConformance"]


class FrozenLinkConformance:
    """Opt-in: a frozen link is found by the liveness probe, reported, and recovered from.

    Subclass it beside :class:`BackboneConformance` and provide a ``freeze`` fixture
    (:class:`BackboneFreeze`), for example a TCP proxy between the plugin and its server::

        class TestNatsConformance(BackboneConformance, FrozenLinkConformance):
            @pytest.fixture
            def freeze(self, proxy):
                return proxy
    """

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def freeze(self) -> BackboneFreeze:
        """Something that freezes the backbone's link and thaws it (override this)."""
        pytest.fail("Override the 'freeze' fixture in your FrozenLinkConformance subclass.")

    async def test_a_frozen_link_is_found_and_recovered_from(
        self,
        make_broadcast: Callable[..., Broadcast],
        channel: str,
        freeze: BackboneFreeze,
    ) -> None:
        """Open but silent: the probe's deadline makes it a gap; after the thaw, delivery resumes."""
        async with make_broadcast() as broadcast:
            async with broadcast.subscribe(channel, keep_going=True) as subscriber:
                await broadcast.publish(channel, "before")
                assert (await _next_event(subscriber)).message == "before"
                await freeze.freeze()
                try:
                    marker = await _next_event(subscriber)
                    assert isinstance(marker, Gap), f"expected a Gap, got {marker!r}"
                    assert marker.channel == channel
                finally:
                    with anyio.CancelScope(shield=True):
                        await freeze.thaw()
                await _until_healthy(broadcast)
                await broadcast.publish(channel, "thawed")
                with anyio.fail_after(DEADLINE):  # what was held in the link may come first
                    while not isinstance(event := await subscriber.get(), Event) or (
                        event.message != "thawed"
                    ):
                        pass
            assert broadcast.health().gaps >= 1


class AccessControlConformance:
    """Opt-in, for backbones with access control per channel: a refused channel is
    ``AccessDenied``, at once and typed, and the channels allowed keep working.

    Provide ``restricted``: ``(url, allowed_channel, denied_channel)`` for credentials that may
    use the first channel and not the second.
    """

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def restricted(self) -> tuple[str, str, str]:
        """(url, allowed channel, denied channel) (override this)."""
        pytest.fail("Override the 'restricted' fixture in your AccessControlConformance subclass.")

    async def test_a_refused_subscription_is_access_denied(
        self, restricted: tuple[str, str, str], broadcast_options: dict[str, Any]
    ) -> None:
        url, allowed, denied = restricted
        async with Broadcast(url, **broadcast_options) as broadcast:
            with anyio.fail_after(DEADLINE), pytest.raises(AccessDenied):
                async with broadcast.subscribe(denied):
                    pass
            async with broadcast.subscribe(allowed) as subscriber:
                await broadcast.publish(allowed, "still fine")
                assert (await _next_event(subscriber)).message == "still fine"
            assert broadcast.health().ok

    async def test_a_refused_channel_entered_with_an_allowed_one_fails_alone(
        self, restricted: tuple[str, str, str], broadcast_options: dict[str, Any]
    ) -> None:
        """Subscribes entered together may reach the plugin in one batch: the refusal of one
        channel must not fail the others (the core retries a failed batch channel by channel)."""
        url, allowed, denied = restricted
        outcomes: dict[str, str] = {}
        async with Broadcast(url, **broadcast_options) as broadcast:

            async def enter(channel: str) -> None:
                try:
                    async with broadcast.subscribe(channel) as subscriber:
                        if channel == allowed:
                            await broadcast.publish(allowed, "entered together")
                            outcomes[channel] = (await _next_event(subscriber)).message
                except AccessDenied:
                    outcomes[channel] = "denied"

            with anyio.fail_after(DEADLINE):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(enter, denied)
                    tasks.start_soon(enter, allowed)
        assert outcomes == {allowed: "entered together", denied: "denied"}

    async def test_a_refused_publish_is_access_denied(
        self, restricted: tuple[str, str, str], broadcast_options: dict[str, Any]
    ) -> None:
        url, allowed, denied = restricted
        async with Broadcast(url, **broadcast_options) as broadcast:
            with anyio.fail_after(DEADLINE), pytest.raises(AccessDenied):
                await broadcast.publish(denied, "not allowed")
            await broadcast.publish(allowed, "allowed")
