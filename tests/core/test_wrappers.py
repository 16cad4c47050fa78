"""Hook wrappers around the core's own calls: a tracer or audit log sees every connect, publish
and subscribe, with its outcome, on any backbone; the core's own work stays the core's."""

import importlib.metadata
import types
import uuid

import anyio
import pytest

from opal_broadcast import BackboneUnavailable, Broadcast, Event, InvalidChannel
from opal_broadcast._wrappers import Wrappers, wrappers
from opal_broadcast.plugin import hookimpl, register_wrappers, unregister_wrappers
from opal_broadcast.testing import restore_memory, simulate_memory_loss

pytestmark = pytest.mark.anyio


class Recorder:
    """Records each wrapped call as (call, detail, outcome) once its awaitable is done."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def _watch(self, call: str, detail: str, awaitable):
        async def watched():
            try:
                await awaitable
            except BaseException as exc:
                self.calls.append((call, detail, type(exc).__name__))
                raise
            self.calls.append((call, detail, "ok"))

        return watched()

    @hookimpl(wrapper=True)
    def opal_broadcast_around_connect(self, url):
        return self._watch("connect", str(url), (yield))

    @hookimpl(wrapper=True)
    def opal_broadcast_around_publish(self, channel, message):
        return self._watch("publish", f"{channel}={message}", (yield))

    @hookimpl(wrapper=True)
    def opal_broadcast_around_subscribe(self, channel):
        return self._watch("subscribe", channel, (yield))


@pytest.fixture
def recorder():
    recorder = Recorder()
    register_wrappers(recorder)
    yield recorder
    unregister_wrappers(recorder)
    assert not (wrappers.connect or wrappers.publish or wrappers.subscribe)


async def test_a_wrapper_sees_each_call_and_its_outcome(recorder):
    url = f"memory://{uuid.uuid4().hex}"
    async with Broadcast(url) as broadcast:
        async with broadcast.subscribe("news") as subscriber:
            await broadcast.publish("news", "hello")
            assert await subscriber.get() == Event("news", "hello")
    assert recorder.calls == [
        ("connect", url, "ok"),
        ("subscribe", "news", "ok"),
        ("publish", "news=hello", "ok"),
    ]


async def test_a_wrapper_sees_failures_and_reconnects_but_not_what_the_checks_refuse(recorder):
    url = f"memory://{uuid.uuid4().hex}"
    async with Broadcast(url, publish_timeout=0.2, reconnect_max_delay=0.05) as broadcast:
        with pytest.raises(InvalidChannel):
            await broadcast.publish("", "refused before any call")
        simulate_memory_loss(url, stay_down=True)
        with pytest.raises(BackboneUnavailable):
            await broadcast.publish("news", "during the outage")
        restore_memory(url)
        with anyio.fail_after(5):
            while broadcast.health().state != "connected":
                await anyio.sleep(0.01)
    connects = [outcome for call, _, outcome in recorder.calls if call == "connect"]
    assert connects[0] == "ok" and connects[-1] == "ok"
    assert "BackboneUnavailable" in connects  # a reconnect attempt while the backbone was down
    assert ("publish", "news=during the outage", "BackboneUnavailable") in recorder.calls
    assert not any(detail.startswith("=") for _, detail, _ in recorder.calls)


async def test_a_wrapper_may_replace_the_awaitable():
    seen: list[str] = []

    class Audit:
        @hookimpl(wrapper=True)
        def opal_broadcast_around_publish(self, channel):
            publishing = yield

            async def audited():
                seen.append(f"before {channel}")
                await publishing
                seen.append(f"after {channel}")

            return audited()

    audit = Audit()
    register_wrappers(audit)
    try:
        async with Broadcast(f"memory://{uuid.uuid4().hex}") as broadcast:
            await broadcast.publish("a", "x")
    finally:
        unregister_wrappers(audit)
    assert seen == ["before a", "after a"]


def test_an_implementation_that_is_not_a_wrapper_is_refused():
    class Usurper:
        @hookimpl
        def opal_broadcast_around_publish(self, attempt):
            return attempt()

    with pytest.raises(ValueError, match=r"must be marked @hookimpl\(wrapper=True\)"):
        register_wrappers(Usurper())
    assert not wrappers.publish


def test_wrappers_declared_under_the_entry_point_group_are_loaded_once(monkeypatch):
    module = types.ModuleType("acme_tracing")
    module.opal_broadcast_around_publish = Recorder.opal_broadcast_around_publish.__get__(
        Recorder()
    )
    broken = importlib.metadata.EntryPoint(
        "broken", "no_such_module_xyz", "opal_broadcast.wrappers"
    )
    found = importlib.metadata.EntryPoint("acme", "acme_tracing", "opal_broadcast.wrappers")
    monkeypatch.setitem(__import__("sys").modules, "acme_tracing", module)
    calls = []

    def fake_entry_points(group):
        calls.append(group)
        return [broken, found]

    monkeypatch.setattr("opal_broadcast._wrappers.entry_points", fake_entry_points)
    fresh = Wrappers()
    fresh.autoload()
    fresh.autoload()
    assert calls == ["opal_broadcast.wrappers"]
    assert fresh.publish and not fresh.subscribe
