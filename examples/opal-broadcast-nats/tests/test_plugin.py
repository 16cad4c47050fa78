"""What the NATS plugin adds to the conformance suite: its URLs, options, subjects and errors."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

from opal_broadcast import (
    AuthenticationFailed,
    BackboneUnavailable,
    BackboneURL,
    Broadcast,
    InvalidChannel,
    InvalidOption,
    InvalidURL,
    MessageTooLarge,
)
from opal_broadcast_nats._connection import NatsConnection

from .conftest import NatsServer, free_port

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {"connect_timeout": 5.0, "publish_timeout": 3.0}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_the_entry_point_module_imports_no_driver() -> None:
    """Discovery stays cheap and safe: loading the declaration does not import nats-py."""
    code = "import sys, opal_broadcast_nats.plugin; print('nats' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    "channel",
    ["a b", "tab\there", "line\nbreak", "a.*", "a.>", "a*", ".a", "a.", "a..b", "x" * 1025],
)
def test_channels_that_are_not_literal_subjects_are_refused_before_io(channel: str) -> None:
    """The check the core runs before a name's first use needs no connection (here: none)."""
    url = BackboneURL.parse("nats://127.0.0.1:1")
    with pytest.raises(InvalidChannel):
        NatsConnection.check_channel(url, {}, channel)


async def test_dotted_and_punctuated_names_round_trip(nats_server: NatsServer) -> None:
    """Dots separate NATS tokens but a dotted name is still one exact subject."""
    async with Broadcast(nats_server.url, **FAST) as broadcast:
        for channel in ("opal.policy-data", "__EventNotifier_ACK:1"):
            async with broadcast.subscribe(channel) as subscriber:
                await broadcast.publish(channel + ".more", "not this one")
                await broadcast.publish(channel, "this one")
                assert (await subscriber.get()).message == "this one"


@pytest.mark.parametrize(
    ("url", "options", "error"),
    [
        ("nats://127.0.0.1:1?nmae=x", {}, InvalidOption),
        ("nats://127.0.0.1:1", {"server_timeout": 0.5}, InvalidOption),
        ("nats://127.0.0.1:1?server_timeout=0", {}, InvalidOption),
        ("nats://127.0.0.1:1", {"name": 3}, InvalidOption),
        ("nats://127.0.0.1:1/path", {}, InvalidURL),
    ],
)
async def test_bad_urls_and_options_are_refused_before_io(
    url: str, options: dict[str, Any], error: type[Exception]
) -> None:
    """Nothing listens on port 1: the error can only come from the checks."""
    with pytest.raises(error):
        await Broadcast(url, **FAST, **options).connect()


async def test_options_from_the_query_string_and_keywords(nats_server: NatsServer) -> None:
    """``name`` and ``server_timeout`` are accepted either way."""
    url = f"{nats_server.url}?name=opal-server&server_timeout=3"
    async with Broadcast(url, **FAST) as broadcast:
        await broadcast.publish("options", "ok")
    async with Broadcast(
        nats_server.url, name="opal-server", server_timeout=3, **FAST
    ) as broadcast:
        await broadcast.publish("options", "ok")


async def test_an_unreachable_server_fails_fast() -> None:
    """A refused connection is BackboneUnavailable at once, not after the connect timeout."""
    started = time.monotonic()
    with pytest.raises(BackboneUnavailable, match="Check that nats-server is running"):
        await Broadcast(f"nats://127.0.0.1:{free_port()}", **FAST).connect()
    assert time.monotonic() - started < 2.0


async def test_the_first_server_that_answers_is_used(nats_server: NatsServer) -> None:
    """``nats://dead,alive`` connects to the live one."""
    url = f"nats://127.0.0.1:{free_port()},127.0.0.1:{nats_server.port}"
    async with Broadcast(url, **FAST) as broadcast, broadcast.subscribe("failover") as subscriber:
        await broadcast.publish("failover", "up")
        assert (await subscriber.get()).message == "up"


async def test_credentials_from_the_url(nats_auth_server: NatsServer) -> None:
    """A percent-encoded password is decoded and accepted."""
    url = f"nats://alice:s3cr%23t%2Fpw@127.0.0.1:{nats_auth_server.port}"
    async with Broadcast(url, **FAST) as broadcast, broadcast.subscribe("auth") as subscriber:
        assert "s3cr" not in broadcast.url
        await broadcast.publish("auth", "in")
        assert (await subscriber.get()).message == "in"


async def test_refused_credentials_never_show_the_password(nats_auth_server: NatsServer) -> None:
    """A wrong password is AuthenticationFailed, and neither it nor its encoding leaks."""
    url = f"nats://alice:wr%23ng-pw@127.0.0.1:{nats_auth_server.port}"
    with pytest.raises(AuthenticationFailed) as caught:
        await Broadcast(url, **FAST).connect()
    text = f"{caught.value} {caught.value.__cause__!r}"
    assert "wr#ng" not in text
    assert "wr%23ng" not in text
    assert "alice:***@" in str(caught.value)


async def test_a_message_over_max_payload_is_refused(nats_server: NatsServer) -> None:
    """The server's max_payload (1 MB by default) is checked before sending."""
    async with Broadcast(nats_server.url, **FAST) as broadcast:
        with pytest.raises(MessageTooLarge, match="max_payload"):
            await broadcast.publish("big", b"x" * (1024 * 1024 + 1))
        await broadcast.publish("big", "the connection is still fine")
