"""Routing by scheme: in-process registration, conflicts, invalid plugins, typed errors."""

import logging
import types
import uuid

import anyio
import pytest

import opal_broadcast
from opal_broadcast import (
    BackboneInfo,
    Broadcast,
    Event,
    PluginConflict,
    PluginLoadError,
    UnknownScheme,
    UnsupportedAsyncLibrary,
    _memory,
    hookimpl,
)
from opal_broadcast._memory import MemoryConnection
from opal_broadcast._registry import Registry, default_registry
from opal_broadcast.plugin import CONTRACT_VERSION

pytestmark = pytest.mark.anyio


def make_plugin(scheme, *, libraries=("asyncio", "trio"), calls=None, **methods):
    """A plugin serving ``scheme`` on the memory bus, recording calls; ``methods`` override the
    connection class's (``open``, ``check_channel``, ... as the contract names them)."""
    calls = [] if calls is None else calls

    class Recording(MemoryConnection):
        @classmethod
        async def open(cls, url, options, link):
            calls.append("connect")
            return await super().open(url, options, link)

        async def publish(self, channel, message):
            calls.append("publish")
            await super().publish(channel, message)

        async def subscribe(self, channels):
            calls.append("subscribe")
            await super().subscribe(channels)

    connection = type(f"Connection_{scheme}", (Recording,), methods)
    plugin = types.ModuleType(f"plugin_{scheme}_{uuid.uuid4().hex[:6]}")

    @hookimpl
    def opal_broadcast_backbone():
        return BackboneInfo(
            schemes=(scheme,),
            contract=CONTRACT_VERSION,
            connection=connection,
            async_libraries=libraries,
        )

    plugin.opal_broadcast_backbone = opal_broadcast_backbone
    return plugin


@pytest.fixture
def registered():
    """Register plugins in the process registry for one test, then remove them."""
    added = []

    def register(plugin):
        added.append(opal_broadcast.register(plugin))
        return added[-1]

    yield register
    for backbone in added:
        default_registry().unregister(backbone)


async def test_register_in_process_routes_the_scheme_to_it(registered):
    """register() makes a new scheme work, and every call goes to that plugin."""
    calls = []
    registered(make_plugin("inproc", calls=calls))
    async with Broadcast("inproc://x") as broadcast, broadcast.subscribe("c") as subscriber:
        await broadcast.publish("c", "m")
        assert await subscriber.get() == Event("c", "m")
    assert calls == ["connect", "subscribe", "publish"]


async def test_backend_argument_uses_a_plugin_object_directly():
    """Broadcast(url, backend=plugin) needs no registration nor entry point."""
    calls = []
    plugin = make_plugin("direct", calls=calls)
    async with Broadcast("direct://y", backend=plugin) as broadcast:
        await broadcast.publish("c", "m")
    assert calls == ["connect", "publish"]


def test_two_in_process_plugins_claiming_one_scheme_conflict(registered):
    """The second registration names the first: never first-wins silently."""
    registered(make_plugin("twice"))
    with pytest.raises(PluginConflict, match="twice://"):
        registered(make_plugin("twice"))


def test_invalid_plugins_are_refused_with_the_reason():
    """No declaration is a PluginLoadError (test_contract.py covers bad declarations)."""
    registry = Registry(autoload=False)
    with pytest.raises(PluginLoadError, match="BackboneInfo"):
        registry.register(types.ModuleType("empty"))


def test_unknown_first_party_scheme_names_the_pip_install():
    """redis:// without the plugin: the exact pip install, and what is installed."""
    registry = Registry(autoload=False)
    registry.register(_memory, name="memory")
    with pytest.raises(UnknownScheme) as caught:
        registry.resolve("kafka")
    message = str(caught.value)
    assert "pip install opal-broadcast-kafka" in message
    assert "Installed: memory." in message
    assert caught.value.installed == ("memory",)


def test_unknown_scheme_suggests_the_closest():
    """A typo gets a did-you-mean."""
    registry = Registry(autoload=False)
    registry.register(_memory, name="memory")
    with pytest.raises(UnknownScheme, match="Did you mean redis://"):
        registry.resolve("reddis")
    with pytest.raises(UnknownScheme, match="Did you mean memory://"):
        registry.resolve("memroy")


async def test_unknown_scheme_through_broadcast():
    """The error reaches the caller of connect(), typed."""
    with pytest.raises(UnknownScheme, match="nosuchbackbone://"):
        async with Broadcast("nosuchbackbone://h"):
            pass


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_asyncio_only_plugin_under_trio_is_a_clear_error():
    """A plugin declaring asyncio only fails on trio with a message naming both."""
    plugin = make_plugin("aio", libraries=("asyncio",))
    with pytest.raises(UnsupportedAsyncLibrary, match="asyncio only, not trio"):
        async with Broadcast("aio://z", backend=plugin):
            pass


async def test_plugin_error_with_the_password_is_masked():
    """A plugin that quotes the password in its error: the core masks it and drops the cause."""

    async def open(cls, url, options, link):
        raise RuntimeError(f"auth failed for {url.reveal()} with password {url.password}")

    plugin = make_plugin("leaky", open=classmethod(open))
    with pytest.raises(opal_broadcast.BackboneError) as caught:
        async with Broadcast("leaky://u:Sentinel-77x@h", backend=plugin):
            pass
    assert "Sentinel-77x" not in str(caught.value)
    assert "***" in str(caught.value)
    assert caught.value.__cause__ is None


async def test_loss_reported_during_connect_is_not_lost():
    """A plugin whose connection dies inside connect(): a typed error, not a silent dead link."""

    async def open(cls, url, options, link):
        connection = await MemoryConnection.open(url, options, link)
        link.lost("reset by peer during the handshake")
        return connection

    plugin = make_plugin("dies", open=classmethod(open))
    with pytest.raises(opal_broadcast.BackboneUnavailable, match="lost while connecting"):
        async with Broadcast("dies://x", backend=plugin):
            pass


async def test_plugin_channel_check_runs_before_any_io_even_when_down():
    """A name the plugin refuses is InvalidChannel at once, not an outage after a timeout."""
    checked = []

    def check_channel(cls, url, options, channel):
        checked.append(channel)
        if " " in channel:
            raise opal_broadcast.InvalidChannel(f"no spaces in {channel!r}")

    plugin = make_plugin("picky", check_channel=classmethod(check_channel))
    url = f"picky://{uuid.uuid4().hex[:6]}"
    async with Broadcast(url, backend=plugin, publish_timeout=30) as broadcast:
        await broadcast.publish("fine", "x")
        await broadcast.publish("fine", "y")
        _memory.simulate_loss(url, stay_down=True)
        try:
            with (
                anyio.fail_after(1),
                pytest.raises(opal_broadcast.InvalidChannel, match="no spaces"),
            ):
                await broadcast.publish("a b", "x")
            with anyio.fail_after(1), pytest.raises(opal_broadcast.InvalidChannel):
                async with broadcast.subscribe("c d"):
                    pass
        finally:
            _memory.restore(url)
    assert checked == ["fine", "a b", "c d"]


async def test_untyped_connection_errors_become_backbone_unavailable():
    """A plugin's stray OSError reaches callers as BackboneUnavailable (a ConnectionError)."""

    async def open(cls, url, options, link):
        raise ConnectionRefusedError(111, "Connection refused")

    plugin = make_plugin("oserr", open=classmethod(open))
    with pytest.raises(opal_broadcast.BackboneUnavailable, match="Connection refused") as caught:
        async with Broadcast("oserr://x", backend=plugin):
            pass
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


async def test_secrets_declared_by_the_plugin_are_masked():
    """A password from the environment, declared with link.keep_secret, never reaches an error."""

    async def open(cls, url, options, link):
        link.keep_secret("Env-S3cret")
        raise RuntimeError("AUTH Env-S3cret refused")

    plugin = make_plugin("envsecret", open=classmethod(open))
    with pytest.raises(opal_broadcast.BackboneError) as caught:
        async with Broadcast("envsecret://h", backend=plugin):
            pass
    assert "Env-S3cret" not in str(caught.value)
    assert "AUTH *** refused" in str(caught.value)
    assert caught.value.__cause__ is None


async def test_oversized_message_during_an_outage_is_refused_at_once():
    """check_message lets a plugin refuse a message while the backbone is down, without waiting."""

    def check_message(cls, url, options, channel, message):
        if len(message) > 10:
            raise opal_broadcast.MessageTooLarge(f"{len(message)} bytes is over the cap of 10")

    plugin = make_plugin("capped", check_message=classmethod(check_message))
    url = f"capped://{uuid.uuid4().hex[:6]}"
    async with Broadcast(url, backend=plugin, publish_timeout=30) as broadcast:
        _memory.simulate_loss(url, stay_down=True)
        try:
            with (
                anyio.fail_after(1),
                pytest.raises(opal_broadcast.MessageTooLarge, match="cap of 10"),
            ):
                await broadcast.publish("c", "x" * 11)
        finally:
            _memory.restore(url)


async def test_a_channel_gap_reported_by_the_plugin_reaches_only_that_channel():
    """link.gap(channel, reason): that channel's subscribers see it, nothing reconnects."""
    links = []

    async def open(cls, url, options, link):
        links.append(link)
        return await MemoryConnection.open(url, options, link)

    plugin = make_plugin("gappy", open=classmethod(open))
    gaps = []
    async with Broadcast("gappy://g", backend=plugin, on_gap=gaps.append) as broadcast:
        async with (
            broadcast.subscribe("a") as ended,
            broadcast.subscribe("a", keep_going=True) as kept,
        ):
            async with broadcast.subscribe("b") as other:
                links[0].gap("a", "fragment 2/3 never came")
                with pytest.raises(opal_broadcast.SubscriptionGap, match="fragment 2/3"):
                    await ended.get()
                marker = await kept.get()
                assert isinstance(marker, opal_broadcast.Gap)
                assert marker.channel == "a"
                await broadcast.publish("a", "after")
                await broadcast.publish("b", "unaffected")
                assert (await kept.get()).message == "after"
                assert (await other.get()).message == "unaffected"
        health = broadcast.health()
    assert (health.gaps, health.reconnects) == (1, 0)
    assert [gap.channel for gap in gaps] == ["a"]


async def test_a_rejected_payload_is_counted_logged_once_per_interval_and_costs_nobody(caplog):
    """link.reject(channel, reason): counted per channel, one log line (with the password
    masked) for a flood on one channel, no gap, no reconnect, every subscriber keeps going."""
    links = []

    async def open(cls, url, options, link):
        links.append(link)
        return await MemoryConnection.open(url, options, link)

    plugin = make_plugin("hostile", open=classmethod(open))
    gaps = []
    url = "hostile://:Rej3ct-pw@h"
    async with Broadcast(url, backend=plugin, on_gap=gaps.append) as broadcast:
        async with broadcast.subscribe("a") as a, broadcast.subscribe("b") as b:
            with caplog.at_level(logging.WARNING, logger="opal_broadcast"):
                for i in range(1000):
                    links[0].reject("a", f"undecodable byte {i} (password Rej3ct-pw)")
                links[0].reject("b", "a fragment header that is not ASCII digits")
            await broadcast.publish("a", "after")
            await broadcast.publish("b", "after")
            assert (await a.get()).message == (await b.get()).message == "after"
        health = broadcast.health()
    assert (health.rejected, dict(health.rejected_by_channel)) == (1001, {"a": 1000, "b": 1})
    assert (health.gaps, health.reconnects, gaps) == (0, 0, [])
    lines = [
        r.getMessage() for r in caplog.records if "no opal-broadcast publisher" in r.getMessage()
    ]
    assert len(lines) == 2, lines
    assert "'a'" in lines[0] and "undecodable byte 0" in lines[0]
    assert not any("Rej3ct-pw" in line for line in lines)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_driver_cancellation_does_not_end_supervision():
    """A disconnect that re-raises an inner task's CancelledError: reconnection still happens."""
    import asyncio

    async def close(self):
        await MemoryConnection.close(self)
        inner = asyncio.get_running_loop().create_task(asyncio.sleep(10))
        inner.cancel()
        await inner  # raises CancelledError, as aiokafka's stop() can

    plugin = make_plugin("strays", close=close)
    url = f"strays://{uuid.uuid4().hex[:6]}"
    async with Broadcast(url, backend=plugin, reconnect_max_delay=0.05) as broadcast:
        _memory.simulate_loss(url, stay_down=False)
        with anyio.fail_after(5):
            while not broadcast.health().ok:
                await anyio.sleep(0.01)
        assert broadcast.health().reconnects == 1
        async with broadcast.subscribe("c") as subscriber:
            await broadcast.publish("c", "alive")
            assert (await subscriber.get()).message == "alive"


async def test_a_publish_made_inside_a_publish_hook_is_delivered():
    """A plugin may publish through the core from inside its own publish hook (the same task,
    already under a publish deadline): the inner publish is bounded too, and both arrive."""
    outer: list[Broadcast] = []

    async def publish(self, channel, message):
        if channel == "outer":
            await outer[0].publish("inner", f"before {message}")
        await MemoryConnection.publish(self, channel, message)

    plugin = make_plugin("nested", publish=publish)
    async with Broadcast("nested://z", backend=plugin, publish_timeout=5) as broadcast:
        outer.append(broadcast)
        async with broadcast.subscribe("inner") as inner, broadcast.subscribe("outer") as sent:
            with anyio.fail_after(5):
                await broadcast.publish("outer", "m")
                assert await inner.get() == Event("inner", "before m")
                assert await sent.get() == Event("outer", "m")
