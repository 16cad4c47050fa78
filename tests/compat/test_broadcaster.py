"""encode/broadcaster 0.3.1's documented behaviour, one test each, on memory, Redis and PostgreSQL.

Written from broadcaster's README, its ``Broadcast``/``Subscriber``/``Event`` classes and its
backend interface, as a user moving over would rely on them; what differs on purpose is listed in
the README's compatibility section (and tested here too).
"""

from __future__ import annotations

import asyncio
import re
import types
import typing
import uuid

import pytest

from opal_broadcast import (
    Broadcast,
    BroadcastBackend,
    ConfigurationError,
    Event,
    Gap,
    InvalidOption,
    InvalidURL,
    SubscriptionGap,
    UnknownScheme,
    hookimpl,
    register,
)
from opal_broadcast._registry import default_registry
from opal_broadcast.plugin import broadcaster_backend_info

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # broadcaster runs on asyncio only


@pytest.fixture(params=["memory", "redis", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    """A URL of each backbone broadcaster and opal-broadcast share."""
    if request.param == "memory":
        return f"memory://compat-{uuid.uuid4().hex[:8]}"
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def channel() -> str:
    return f"chatroom-{uuid.uuid4().hex[:8]}"


# -- the round trip, as broadcaster's README and tests write it --------------------------------


async def test_publish_and_get_with_keyword_arguments(url, channel):
    """publish(channel=..., message=...) then subscriber.get(): an Event with both fields."""
    async with Broadcast(url) as broadcast:
        async with broadcast.subscribe(channel=channel) as subscriber:
            await broadcast.publish(channel=channel, message="hello")
            event = await subscriber.get()
            assert event.channel == channel
            assert event.message == "hello"


async def test_connect_and_disconnect_as_startup_and_shutdown_hooks(url, channel):
    """Starlette's on_startup=[broadcast.connect], on_shutdown=[broadcast.disconnect]."""
    broadcast = Broadcast(url)
    await broadcast.connect()
    try:
        async with broadcast.subscribe(channel) as subscriber:
            await broadcast.publish(channel, "hello")
            assert (await subscriber.get()).message == "hello"
    finally:
        await broadcast.disconnect()
    assert not broadcast.is_connected


async def test_async_for_yields_events_in_publish_order(url, channel):
    """``async for event in subscriber``, as the README's websocket sender reads it."""
    async with Broadcast(url) as broadcast, broadcast.subscribe(channel) as subscriber:
        for number in range(5):
            await broadcast.publish(channel, str(number))
        received = []
        async for event in subscriber:
            received.append(event.message)
            if len(received) == 5:
                break
        assert received == ["0", "1", "2", "3", "4"]


async def test_iteration_ends_quietly_when_the_broadcast_disconnects(url, channel):
    """broadcaster ends a subscriber's ``async for`` without an error when it is unsubscribed;
    here disconnecting ends it the same way, after what was queued."""
    broadcast = Broadcast(url)
    await broadcast.connect()
    async with broadcast.subscribe(channel) as subscriber:
        await broadcast.publish(channel, "last")
        assert (await subscriber.get()).message == "last"
        await broadcast.disconnect()
        received = [event async for event in subscriber]
    assert received == []


async def test_leaving_a_subscription_by_exception_unsubscribes_and_propagates(url, channel):
    """An exception inside ``async with subscribe()`` leaves the channel and is not swallowed."""
    async with Broadcast(url) as broadcast:

        async def leave_by_exception() -> None:
            async with broadcast.subscribe(channel):
                assert broadcast.health().subscribers == 1
                raise RuntimeError("MyException")

        with pytest.raises(RuntimeError, match="MyException"):
            await leave_by_exception()
        health = broadcast.health()
        assert (health.subscribers, health.channels) == (0, 0)
        async with broadcast.subscribe(channel) as again:  # and the channel can be entered again
            await broadcast.publish(channel, "after")
            assert (await again.get()).message == "after"


async def test_every_subscriber_of_a_channel_gets_every_message(url, channel):
    """Two subscribers on one channel, in one process: both receive each message."""
    async with Broadcast(url) as broadcast:
        async with broadcast.subscribe(channel) as one, broadcast.subscribe(channel) as two:
            await broadcast.publish(channel, "both")
            assert (await one.get()).message == (await two.get()).message == "both"


# -- Event ----------------------------------------------------------------------------------------


def test_event_equality_and_repr_are_broadcasters():
    """Event(channel=, message=) compares by its fields and prints as broadcaster's does."""
    assert Event(channel="c", message="m") == Event("c", "m")
    assert Event("c", "m") != Event("c", "n")
    assert Event("c", "m") != Event("d", "m")
    assert repr(Event("chatroom", "hello")) == "Event(channel='chatroom', message='hello')"


# -- configuration errors, raised where the Broadcast is made -----------------------------------


def test_an_unknown_scheme_is_a_value_error_from_the_constructor():
    """broadcaster: ``ValueError("Unsupported backend: ...")`` from ``Broadcast(url)``; here the
    same, typed (UnknownScheme) and naming what is installed."""
    with pytest.raises(ValueError, match="Unsupported backend") as caught:
        Broadcast(url="unknown://")
    assert isinstance(caught.value, UnknownScheme)
    assert "unknown://" in str(caught.value) and "Installed:" in str(caught.value)


def test_a_missing_plugin_names_the_pip_install_from_the_constructor(monkeypatch):
    """A first-party scheme whose plugin is absent: the error says which package to install."""
    from opal_broadcast import _registry

    registry = _registry.Registry(autoload=False)
    monkeypatch.setattr(_registry, "default_registry", lambda: registry)
    monkeypatch.setattr("opal_broadcast._broadcast.default_registry", lambda: registry)
    with pytest.raises(ValueError, match="pip install opal-broadcast-kafka"):
        Broadcast("kafka://localhost:9092")


def test_neither_url_nor_backend_says_what_to_pass():
    """broadcaster asserts "Either `url` or `backend` must be provided."; so does this, as an
    AssertionError that is also a typed configuration error with examples."""
    expected = re.escape("Either `url` or `backend` must be provided.")
    with pytest.raises(AssertionError, match=expected) as e:
        Broadcast()
    assert isinstance(e.value, ConfigurationError)
    assert "Broadcast.from_env()" in str(e.value)


@pytest.mark.parametrize(
    "bad",
    [
        "redis://[::1:6379",  # an unclosed IPv6 bracket
        "redis://::1:6379",  # an IPv6 address without brackets
        "redis://[::1]6379",  # no colon before the port
        "redis://local]host:6379",
        "postgres://h:99999/db",
        "redis://h:\u0661\u0662/0",  # Arabic-Indic digits are not a port
    ],
)
def test_a_malformed_url_is_refused_by_the_constructor_not_guessed_at(bad):
    """Refused with InvalidURL (a ValueError) before any connection is tried."""
    with pytest.raises(InvalidURL):
        Broadcast(bad)


def test_an_ipv6_address_in_brackets_is_accepted():
    """The well-formed IPv6 forms still parse, with and without a port."""
    for good in ("redis://[::1]:6379/0", "redis://[::1]/0", "kafka://[::1]:9092,[::1]:9093"):
        assert Broadcast(good).url == good


@pytest.mark.parametrize(
    "bad_url",
    [
        "memory://compat?bogus=1",
        "redis://localhost:6379/0?bogus=1",
        "kafka://localhost:9092?bogus=1",
        "postgres://localhost/db?bogus=1",
    ],
)
def test_an_unknown_option_is_refused_by_the_constructor(bad_url):
    """A backbone's check_url runs in the constructor: unknown options are typed errors there."""
    with pytest.raises(InvalidOption, match="bogus"):
        Broadcast(bad_url)


# -- custom backends written for broadcaster ------------------------------------------------------


class CustomBackend(BroadcastBackend):
    """A backend exactly as broadcaster's README and test suite write one (no super().__init__)."""

    def __init__(self, url: str):
        self._subscribed: set[str] = set()

    async def connect(self) -> None:
        self._published: asyncio.Queue[Event] = asyncio.Queue()

    async def disconnect(self) -> None:
        pass

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.remove(channel)

    async def publish(self, channel: str, message: typing.Any) -> None:
        event = Event(channel=channel, message=message)
        await self._published.put(event)

    async def next_published(self) -> Event:
        while True:
            event = await self._published.get()
            if event.channel in self._subscribed:
                return event


async def test_a_custom_backend_runs_with_no_url():
    """``Broadcast(backend=CustomBackend(""))``: broadcaster's test_custom, unchanged."""
    backend = CustomBackend("")
    async with Broadcast(backend=backend) as broadcast:
        async with broadcast.subscribe("chatroom") as subscriber:
            await broadcast.publish("chatroom", "hello")
            event = await subscriber.get()
            assert event.channel == "chatroom"
            assert event.message == "hello"


async def test_a_custom_backend_given_with_a_url_is_the_one_used():
    """``Broadcast("memory://", backend=...)``: the backend carries the messages, not memory://."""
    backend = CustomBackend("")
    async with Broadcast("memory://", backend=backend) as broadcast:
        async with broadcast.subscribe("chatroom") as subscriber:
            await broadcast.publish("chatroom", "through the backend")
            assert await subscriber.get() == Event("chatroom", "through the backend")
    assert backend._subscribed == set()  # unsubscribed on the way out


async def test_a_custom_backend_needs_no_subclassing_and_is_shared_through_the_core():
    """Any object with the six methods will do; two Broadcasts on it share one connection, and
    the core's fan-out and bounded queues apply (a slow subscriber overflows alone)."""

    class Plain:
        def __init__(self) -> None:
            self.connects = 0
            self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

        async def connect(self) -> None:
            self.connects += 1

        async def disconnect(self) -> None:
            pass

        async def subscribe(self, channel: str) -> None:
            pass

        async def unsubscribe(self, channel: str) -> None:
            pass

        async def publish(self, channel: str, message: typing.Any) -> None:
            await self.queue.put((channel, message))

        async def next_published(self) -> typing.Any:
            channel, message = await self.queue.get()
            return Event(channel, message)

    backend = Plain()
    async with Broadcast(backend=backend) as one, Broadcast(backend=backend) as two:
        async with two.subscribe("c") as fast, two.subscribe("c", max_queue=2) as slow:
            for number in range(5):
                await one.publish("c", str(number))
            assert [(await fast.get()).message for _ in range(5)] == ["0", "1", "2", "3", "4"]
            assert [(await slow.get()).message for _ in range(2)] == ["0", "1"]
            with pytest.raises(SubscriptionGap) as caught:
                await slow.get()
            assert caught.value.gap.missed == 3
    assert backend.connects == 1


async def test_a_custom_backend_that_raises_from_next_published_is_a_gap_then_reconnects():
    """The backend signals loss by raising: subscribers hear of it, the core disconnects and
    connects the backend again, subscribes the channel again, and delivery resumes."""

    class Flaky(CustomBackend):
        def __init__(self) -> None:
            super().__init__("")
            self.connects = 0
            self.broken = False

        async def connect(self) -> None:
            self.connects += 1
            await super().connect()

        async def disconnect(self) -> None:
            self._subscribed.clear()  # as a real backend's connection would forget them

        async def next_published(self) -> Event:
            event = await super().next_published()
            if event.message == "break":
                raise ConnectionError("the server went away")
            return event

    backend = Flaky()
    async with Broadcast(backend=backend, reconnect_max_delay=0.05) as broadcast:
        async with broadcast.subscribe("c", keep_going=True) as subscriber:
            await broadcast.publish("c", "before")
            assert await subscriber.get() == Event("c", "before")
            await broadcast.publish("c", "break")
            gap = await asyncio.wait_for(subscriber.get(), 5)
            assert isinstance(gap, Gap) and "ConnectionError" in gap.reason
            for _ in range(500):
                if broadcast.health().state == "connected" and "c" in backend._subscribed:
                    break
                await asyncio.sleep(0.01)
            await broadcast.publish("c", "after")
            assert await asyncio.wait_for(subscriber.get(), 5) == Event("c", "after")
    assert backend.connects == 2


def test_a_custom_backend_takes_no_backbone_options():
    """Options configure a plugin; a broadcaster backend is configured by its own constructor."""
    with pytest.raises(InvalidOption, match="configure the backend object itself"):
        Broadcast(backend=CustomBackend(""), sasl_mechanism="PLAIN")


def test_base_class_methods_say_they_are_not_implemented():
    """broadcaster's base class raises NotImplementedError; so does this one, by the same name."""
    with pytest.raises(NotImplementedError):
        BroadcastBackend("memory://")


async def test_a_broadcaster_backend_class_ships_as_the_plugin_of_a_scheme():
    """broadcaster_backend_info(MyBackend, "custom"): Broadcast("custom://...") makes one
    MyBackend(url) per connection, as broadcaster did, and two URLs get two backends."""
    made: list[str] = []

    class UrlBackend(CustomBackend):
        def __init__(self, url: str):
            super().__init__(url)
            made.append(url)

    plugin = types.SimpleNamespace(
        opal_broadcast_backbone=hookimpl(
            lambda: broadcaster_backend_info(UrlBackend, "custom-compat")
        )
    )
    backbone = register(plugin, name="custom-compat")
    try:
        async with (
            Broadcast("custom-compat://:pw@one") as one,
            Broadcast("custom-compat://two") as two,
        ):
            async with one.subscribe("c") as on_one, two.subscribe("c") as on_two:
                await one.publish("c", "for one")
                await two.publish("c", "for two")
                assert await on_one.get() == Event("c", "for one")
                assert await on_two.get() == Event("c", "for two")
            assert "pw" not in repr(one)
    finally:
        default_registry().unregister(backbone)
    assert sorted(made) == ["custom-compat://:pw@one", "custom-compat://two"]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql+psycopg2://u@h/db", "write postgresql:// instead"),
        ("redis+hiredis://h", "write redis:// instead"),
        ("pulsar://localhost:6650", "no plugin of its own for Apache Pulsar"),
    ],
)
def test_opal_url_forms_that_are_not_served_say_what_to_write(url, says):
    """A SQLAlchemy driver suffix names the plain scheme to write; pulsar:// (OPAL documents it)
    says that it needs a third-party plugin; both are UnknownScheme, a ValueError."""
    with pytest.raises(UnknownScheme, match=re.escape(says)):
        Broadcast(url)
