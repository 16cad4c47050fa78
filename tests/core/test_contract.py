"""The plugin contract (v1): declarations checked at discovery, before any I/O; versions and
capabilities; contract 0 plugins through the adapter; batches when restoring."""

import logging
import types
import uuid

import anyio
import pytest

from opal_broadcast import Broadcast, Event, Gap, PluginLoadError
from opal_broadcast._memory import MemoryConnection
from opal_broadcast._registry import Registry
from opal_broadcast.plugin import (
    CONTRACT_VERSION,
    BackboneInfo,
    IncompatiblePlugin,
    PluginContractWarning,
    hookimpl,
)
from opal_broadcast.testing import simulate_memory_loss

pytestmark = pytest.mark.anyio


def declaring(**fields):
    """A plugin module whose hook returns ``BackboneInfo(**fields)``."""
    plugin = types.ModuleType(f"plugin_{uuid.uuid4().hex[:6]}")
    fields.setdefault("schemes", ("acme",))
    fields.setdefault("contract", CONTRACT_VERSION)
    fields.setdefault("connection", MemoryConnection)

    @hookimpl
    def opal_broadcast_backbone():
        return BackboneInfo(**fields)

    plugin.opal_broadcast_backbone = opal_broadcast_backbone
    return plugin


def refused(plugin) -> str:
    with pytest.raises(PluginLoadError) as caught:
        Registry(autoload=False).register(plugin)
    return str(caught.value)


def without(method: str) -> type:
    """MemoryConnection's methods, minus one, in a class of their own (no inheritance)."""
    names = ("open", "check_channel", "check_message", "publish", "subscribe", "unsubscribe")
    names += ("probe", "close")
    members = {name: MemoryConnection.__dict__[name] for name in names if name != method}
    return type("Partial", (), members)


@pytest.mark.parametrize(
    "method", ["open", "check_channel", "check_message", "publish", "subscribe", "probe", "close"]
)
def test_a_connection_class_missing_a_method_is_refused_at_discovery(method):
    """Found when the plugin is registered, not at the first publish; the message names it."""
    message = refused(declaring(connection=without(method)))
    assert f"{method}() is missing" in message
    assert "Partial" in message


def test_wrong_kinds_and_signatures_are_refused_with_every_problem_named():
    class Wrong:
        async def open(self, url, options, link): ...  # not a classmethod

        @classmethod
        def check_channel(cls, url, options, channel): ...

        @classmethod
        async def check_message(cls, url, options, channel, message): ...  # must not be async

        async def publish(self, channel, message): ...

        def subscribe(self, channels): ...  # must be async

        async def unsubscribe(self): ...  # takes channels

        async def probe(self): ...

        async def close(self): ...

    message = refused(declaring(connection=Wrong))
    assert "open() must be a classmethod" in message
    assert "check_message() must be a plain 'def'" in message
    assert "subscribe() must be 'async def'" in message
    assert "unsubscribe() must take (channels)" in message
    assert "publish()" not in message and "probe()" not in message


def test_a_plain_publish_returning_an_awaitable_is_accepted():
    """publish may hand over another object's coroutine (the hot path saves a frame)."""

    class Forwarding(MemoryConnection):
        def publish(self, channel, message):
            return MemoryConnection.publish(self, channel, message)

    backbone = Registry(autoload=False).register(declaring(connection=Forwarding))
    assert backbone.connection is Forwarding


@pytest.mark.parametrize(
    ("schemes", "problem"),
    [
        ((), "at least one scheme"),
        ("acme", "at least one scheme"),
        (("Acme",), "not a valid URL scheme"),
        (("acme://",), "not a valid URL scheme"),
        (("1acme",), "not a valid URL scheme"),
        (("ac me",), "not a valid URL scheme"),
        (("acme", "acme"), "a scheme twice"),
    ],
)
def test_bad_schemes_are_refused(schemes, problem):
    assert problem in refused(declaring(schemes=schemes))


@pytest.mark.parametrize("contract", ["1", 1.0, True, -1, None])
def test_a_contract_version_that_is_not_a_whole_number_is_refused(contract):
    assert "contract version must be an integer" in refused(declaring(contract=contract))


def test_a_contract_1_declaration_without_a_connection_class_is_refused():
    assert "must name its Connection class" in refused(declaring(connection=None))


def test_a_newer_contract_is_incompatible_and_names_the_fix():
    """The error names the plugin, both contract versions and the pip install that fixes it."""
    plugin = declaring(contract=CONTRACT_VERSION + 1, distribution="opal-broadcast-acme")
    with pytest.raises(IncompatiblePlugin) as caught:
        Registry(autoload=False).register(plugin)
    message = str(caught.value)
    assert f"contract {CONTRACT_VERSION + 1}" in message
    assert f"implements contract {CONTRACT_VERSION}" in message
    assert "opal-broadcast-acme" in message
    assert "pip install -U opal-broadcast" in message
    assert caught.value.schemes == ("acme",)


def test_unknown_capabilities_are_ignored_with_one_warning(caplog):
    caplog.set_level(logging.WARNING, "opal_broadcast")
    plugin = declaring(capabilities=frozenset({"batch_subscribe", "teleport"}))
    backbone = Registry(autoload=False).register(plugin)
    assert backbone.capabilities == frozenset({"batch_subscribe"})
    [record] = caplog.records
    assert "teleport" in record.getMessage() and "batch_subscribe" in record.getMessage()


def hooks_plugin(scheme, subscribed):
    """A contract 0 plugin: the nine-hook style, on the memory bus."""
    plugin = types.ModuleType(f"hooks_{scheme}")

    @hookimpl
    def opal_broadcast_backbone():
        return BackboneInfo(schemes=(scheme,))

    @hookimpl
    async def opal_broadcast_connect(url, options, link):
        return await MemoryConnection.open(url, options, link)

    @hookimpl
    async def opal_broadcast_publish(connection, channel, message):
        await connection.publish(channel, message)

    @hookimpl
    async def opal_broadcast_subscribe(connection, channel):
        subscribed.append(channel)
        await connection.subscribe([channel])

    @hookimpl
    def opal_broadcast_disconnect(connection):
        return connection.close()  # a plain function returning an awaitable: also fine

    for hook in (
        opal_broadcast_backbone,
        opal_broadcast_connect,
        opal_broadcast_publish,
        opal_broadcast_subscribe,
        opal_broadcast_disconnect,
    ):
        setattr(plugin, hook.__name__, hook)
    return plugin


async def test_a_hooks_plugin_runs_through_the_adapter_with_a_deprecation_warning():
    """Publish, subscribe, a loss and its restore all work; the warning names the migration."""
    subscribed = []
    plugin = hooks_plugin("hooked", subscribed)
    url = f"hooked://{uuid.uuid4().hex[:6]}"
    with pytest.warns(PluginContractWarning, match="migrating-from-the-hooks-contract-0"):
        broadcast = Broadcast(url, backend=plugin, reconnect_max_delay=0.05)  # resolved here
    async with broadcast, broadcast.subscribe("c", keep_going=True) as subscriber:
        await broadcast.publish("c", "one")
        assert await subscriber.get() == Event("c", "one")
        simulate_memory_loss(url, stay_down=False)
        assert isinstance(await subscriber.get(), Gap)
        with anyio.fail_after(5):
            while broadcast.health().state != "connected":
                await anyio.sleep(0.01)
        await broadcast.publish("c", "two")
        assert await subscriber.get() == Event("c", "two")
    assert subscribed == ["c", "c"]


def test_a_hooks_plugin_missing_a_required_hook_is_refused():
    plugin = hooks_plugin("half", [])
    del plugin.opal_broadcast_subscribe
    assert "opal_broadcast_subscribe" in refused(plugin)


async def test_a_batching_plugin_is_restored_in_a_few_calls():
    """With batch_subscribe, 2,500 channels come back in three subscribe calls, not 2,500."""
    calls = []

    class Counting(MemoryConnection):
        async def subscribe(self, channels):
            calls.append(len(channels))
            await super().subscribe(channels)

    plugin = declaring(
        schemes=("batching",), connection=Counting, capabilities=frozenset({"batch_subscribe"})
    )
    url = f"batching://{uuid.uuid4().hex[:6]}"
    names = [f"c{i}" for i in range(2500)]
    async with Broadcast(url, backend=plugin, reconnect_max_delay=0.05) as broadcast:
        subscribers = [broadcast.subscribe(name, keep_going=True) for name in names]
        entered = [await subscriber.__aenter__() for subscriber in subscribers]
        assert calls == [1] * 2500
        calls.clear()
        simulate_memory_loss(url, stay_down=False)
        with anyio.fail_after(5):
            while broadcast.health().state != "connected":
                await anyio.sleep(0.01)
        assert sorted(calls) == [500, 1000, 1000]
        await broadcast.publish("c2499", "back")
        assert isinstance(await entered[-1].get(), Gap)
        assert await entered[-1].get() == Event("c2499", "back")
        for subscriber in subscribers:
            await subscriber.__aexit__(None, None, None)
