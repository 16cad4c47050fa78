"""Connect, share, disconnect: broadcaster's lifecycle without its traps."""

import logging
import uuid

import anyio
import pytest

from opal_broadcast import (
    Broadcast,
    ConfigurationError,
    Event,
    InvalidMessage,
    InvalidOption,
    NotConnectedError,
    _memory,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def url():
    return f"memory://lifecycle-{uuid.uuid4().hex[:8]}"


def _connections(url):
    return len(
        _memory._buses[
            _memory.bus_name(__import__("opal_broadcast").BackboneURL.parse(url))
        ].connections
    )


async def test_use_before_connect_says_what_to_do(url):
    """publish/subscribe before connect raise NotConnectedError naming the fix."""
    broadcast = Broadcast(url)
    with pytest.raises(NotConnectedError, match="async with Broadcast"):
        await broadcast.publish("c", "m")
    with pytest.raises(NotConnectedError):
        async with broadcast.subscribe("c"):
            pass
    with pytest.raises(NotConnectedError):
        broadcast.health()


async def test_connect_and_disconnect_are_idempotent(url):
    """Two connects, two disconnects: one connection opened, then closed."""
    broadcast = Broadcast(url)
    await broadcast.connect()
    await broadcast.connect()
    assert _connections(url) == 1
    await broadcast.disconnect()
    await broadcast.disconnect()
    assert _connections(url) == 0
    assert not broadcast.is_connected


async def test_instances_on_one_url_share_one_connection(url):
    """Reference counted: the connection closes with the last instance."""
    async with Broadcast(url) as first:
        async with Broadcast(url), Broadcast(url):
            assert _connections(url) == 1
        assert _connections(url) == 1
        async with Broadcast(url, share_connection=False):
            assert _connections(url) == 2
        await first.publish("c", "still usable")
    assert _connections(url) == 0


async def test_one_backbone_subscription_per_channel(url):
    """Three local subscribers, one subscription on the backbone, all fed."""
    async with Broadcast(url) as broadcast:
        async with broadcast.subscribe("c") as a, broadcast.subscribe("c") as b:
            async with broadcast.subscribe("c") as c:
                (connection,) = _memory._buses[_memory.bus_name(broadcast._url)].connections
                assert connection.channels == {"c"}
                assert broadcast.health().channels == 1
                await broadcast.publish("c", "m")
                for subscriber in (a, b, c):
                    assert await subscriber.get() == Event("c", "m")
        assert connection.channels == set()


async def test_disconnect_ends_the_iteration_cleanly(url):
    """A subscriber of a disconnected Broadcast finishes its queue, then stops iterating."""
    broadcast = Broadcast(url)
    await broadcast.connect()
    received = []
    async with broadcast.subscribe("c") as subscriber:
        await broadcast.publish("c", "last")
        await broadcast.disconnect()
        async for event in subscriber:
            received.append(event.message)
    assert received == ["last"]


async def test_publish_refuses_non_text_messages(url):
    """Only str and bytes: a dict is a typed error naming the fix."""
    async with Broadcast(url) as broadcast:
        with pytest.raises(InvalidMessage, match=r"json\.dumps"):
            await broadcast.publish("c", {"a": 1})  # type: ignore[arg-type]


async def test_publish_accepts_keywords(url):
    """broadcaster callers write publish(channel=..., message=...)."""
    async with Broadcast(url) as broadcast, broadcast.subscribe(channel="c") as subscriber:
        await broadcast.publish(channel="c", message="kw")
        assert (await subscriber.get()).message == "kw"


async def test_unknown_option_is_refused_at_connect(url):
    """Options a plugin does not know are an error, not silently ignored."""
    with pytest.raises(InvalidOption, match="Unknown option 'colour'"):
        async with Broadcast(url + "?colour=blue"):
            pass


def test_from_env_names_the_variable(monkeypatch):
    """Unset OPAL_BROADCAST_URI: the error names it; set: a Broadcast on it."""
    monkeypatch.delenv("OPAL_BROADCAST_URI", raising=False)
    with pytest.raises(ConfigurationError, match="OPAL_BROADCAST_URI"):
        Broadcast.from_env()
    monkeypatch.setenv("OPAL_BROADCAST_URI", "memory://env")
    assert Broadcast.from_env().url == "memory://env"


async def test_password_never_in_repr_health_or_logs(caplog):
    """A sentinel password stays out of repr, health and every log record of a loss."""
    caplog.set_level(logging.DEBUG, logger="opal_broadcast")
    url = "memory://user:Sentinel-9d3f@pw-test"
    broadcast = Broadcast(url, reconnect_max_delay=0.05)
    assert "Sentinel-9d3f" not in repr(broadcast)
    async with broadcast:
        _memory.simulate_loss(url, stay_down=False)
        with anyio.fail_after(5):
            while broadcast.health().reconnects < 1:
                await anyio.sleep(0.01)
        text = repr(broadcast) + repr(broadcast.health())
    assert caplog.records, "expected log records about the loss"
    assert "Sentinel-9d3f" not in text
    assert all("Sentinel-9d3f" not in record.getMessage() for record in caplog.records)
