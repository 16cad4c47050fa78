"""A websocket fan-out service run with ``uvicorn --workers N``, kept in sync by opal-broadcast.

Configured only by ``OPAL_BROADCAST_URI``. Every worker subscribes to one channel at startup;
``POST /publish`` (JSON body) publishes on it from whichever worker takes the request, and every
worker forwards what arrives to its own websocket clients on ``/ws``. Each client first receives
``{"worker": <pid>}`` so you can see where it landed::

    OPAL_BROADCAST_URI=redis://localhost:6379 uvicorn app:app --app-dir examples/multiworker --workers 4

Without a shared backbone (``memory://``) each worker only hears its own publishes: the negative
control in the tests.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect

from opal_broadcast import Broadcast, Event

CHANNEL = os.environ.get("OPAL_BROADCAST_CHANNEL_NAME", "EventNotifier")

clients: set[asyncio.Queue[str]] = set()


async def forward(broadcast: Broadcast, ready: asyncio.Event) -> None:
    """Hand every event of the channel to every local websocket client."""
    async with broadcast.subscribe(CHANNEL, keep_going=True) as subscriber:
        ready.set()
        async for item in subscriber:
            if isinstance(item, Event):
                for queue in clients:
                    queue.put_nowait(str(item.message))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with Broadcast.from_env() as broadcast:
        app.state.broadcast = broadcast
        ready = asyncio.Event()
        reader = asyncio.create_task(forward(broadcast, ready))
        await ready.wait()  # subscribed before this worker accepts anything
        try:
            yield
        finally:
            reader.cancel()


app = FastAPI(lifespan=lifespan)


@app.post("/publish")
async def publish(request: Request) -> dict[str, int]:
    """Publish the request's JSON body to every client of every worker."""
    body = await request.json()
    await request.app.state.broadcast.publish(CHANNEL, json.dumps(body))
    return {"worker": os.getpid()}


@app.websocket("/ws")
async def websocket(socket: WebSocket) -> None:
    """Send ``{"worker": pid}``, then every message published on the channel."""
    await socket.accept()
    queue: asyncio.Queue[str] = asyncio.Queue()
    clients.add(queue)

    async def pump() -> None:
        while True:
            await socket.send_text(await queue.get())

    await socket.send_text(json.dumps({"worker": os.getpid()}))
    sender = asyncio.create_task(pump())
    try:
        while True:  # reading is how a departed client is noticed
            await socket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        sender.cancel()
        clients.discard(queue)
