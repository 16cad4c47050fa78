"""fastapi_websocket_pubsub 1.0.x, as OPAL server uses it, runs unchanged on opal_broadcast.Broadcast.

Two ASGI apps, each a ``PubSubEndpoint`` with its own ``EventBroadcaster`` on the same backbone URL
(``broadcast_type=opal_broadcast.Broadcast``, nothing else changed), served by uvicorn on loopback
with a websocket client each: an event published through one endpoint reaches both clients.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi_websocket_pubsub import PubSubClient, PubSubEndpoint
from fastapi_websocket_pubsub.event_broadcaster import EventBroadcaster
from fastapi_websocket_pubsub.event_notifier import EventNotifier

import opal_broadcast

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.opal,
    # fastapi_websocket_pubsub 1.0.1 still calls pydantic v1 methods (.copy, .parse_raw).
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn and fastapi_websocket_pubsub are asyncio code


@pytest.fixture(params=["memory", "redis", "postgres", "kafka"])
def backbone_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://fwp-{uuid.uuid4().hex[:8]}"
    return str(request.getfixturevalue(f"{request.param}_url"))


async def _serve(stack: AsyncExitStack, app: FastAPI) -> int:
    """Serve ``app`` with uvicorn on an ephemeral loopback port until the stack closes."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def stop() -> None:
        server.should_exit = True
        await task

    stack.push_async_callback(stop)
    with anyio.fail_after(10):
        while not server.started:
            await asyncio.sleep(0.01)
    return int(server.servers[0].sockets[0].getsockname()[1])


async def test_an_event_published_through_one_endpoint_reaches_clients_of_both(backbone_url):
    """Two OPAL-style workers on one backbone: a publish on one reaches clients of both."""
    channel = f"EventNotifier-{uuid.uuid4().hex[:8]}"
    received: dict[int, list[Any]] = {0: [], 1: []}
    async with AsyncExitStack() as stack:
        endpoints = []
        for index in range(2):
            notifier = EventNotifier()
            broadcaster = EventBroadcaster(
                backbone_url, notifier, channel=channel, broadcast_type=opal_broadcast.Broadcast
            )
            endpoint = PubSubEndpoint(broadcaster=broadcaster, notifier=notifier)
            app = FastAPI()
            endpoint.register_route(app, "/pubsub")
            port = await _serve(stack, app)
            # As OPAL server does at startup: keep the worker's broadcast reader running.
            await stack.enter_async_context(broadcaster.get_listening_context())
            with anyio.fail_after(10):
                while not _listening(broadcaster):
                    await asyncio.sleep(0.01)

            async def on_event(data: Any, topic: str, index: int = index) -> None:
                received[index].append(data)

            client = PubSubClient(["policy"], callback=on_event)
            client.start_client(f"ws://127.0.0.1:{port}/pubsub")
            stack.push_async_callback(client.disconnect)
            with anyio.fail_after(10):
                await client.wait_until_ready()
            endpoints.append(endpoint)

        await endpoints[0].publish(["policy"], data={"version": 42})
        with anyio.fail_after(20):
            while not (received[0] and received[1]):
                await asyncio.sleep(0.02)
    assert received == {0: [{"version": 42}], 1: [{"version": 42}]}


def _listening(broadcaster: EventBroadcaster) -> bool:
    """The worker's reader has subscribed its channel on the backbone."""
    listener = broadcaster.listening_broadcast_channel
    return listener is not None and listener.is_connected and listener.health().subscribers > 0
