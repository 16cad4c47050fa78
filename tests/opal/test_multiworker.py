"""Several uvicorn workers kept in sync through opal-broadcast, on every backbone.

The example service in ``examples/multiworker`` runs with 4 workers; websocket clients are
connected until every worker has some; messages are published through the HTTP API (any worker
takes each request); every client must receive every message. The negative control runs the same
with ``memory://``, which each worker holds alone, and shows messages missing.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import anyio
import pytest
import websockets

from tests.opal._uvicorn import serve as serve_app
from tests.opal._uvicorn import uvicorn_command

pytestmark = [pytest.mark.anyio, pytest.mark.opal]

APP_DIR = Path(__file__).resolve().parents[2] / "examples" / "multiworker"
WORKERS = 4
MESSAGES = 10


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextmanager
def serve(url: str, log: Path) -> Iterator[int]:
    """Run the example with 4 uvicorn workers on ``url``; yield its port once it answers."""
    channel = f"EventNotifier-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "OPAL_BROADCAST_URI": url, "OPAL_BROADCAST_CHANNEL_NAME": channel}
    arguments = [
        "app:app",
        "--app-dir",
        str(APP_DIR),
        "--workers",
        str(WORKERS),
        "--log-level",
        "info",
        "--no-access-log",
    ]
    with serve_app(uvicorn_command(sys.executable, arguments), env, log, workers=WORKERS) as port:
        yield port


def _post(port: int, body: dict[str, int]) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/publish",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(json.loads(response.read())["worker"])


async def run_scenario(port: int) -> tuple[dict[int, int], set[int], list[list[int]]]:
    """Connect clients until every worker has some, publish, and collect what each received."""
    async with AsyncExitStack() as stack:
        connections: list[tuple[int, websockets.ClientConnection]] = []  # (worker pid, socket)

        async def connect() -> None:
            connection = await stack.enter_async_context(
                websockets.connect(f"ws://127.0.0.1:{port}/ws")
            )
            connections.append((int(json.loads(await connection.recv())["worker"]), connection))

        # Bursts of simultaneous connections spread over the workers far better than one at a
        # time (a worker that has just accepted tends to win the next accept too).
        with anyio.fail_after(90):
            while len({pid for pid, _ in connections}) < WORKERS:
                if len(connections) >= 400:
                    raise AssertionError(f"400 clients did not reach all {WORKERS} workers")
                async with anyio.create_task_group() as burst:
                    for _ in range(2 * WORKERS):
                        burst.start_soon(connect)
        landed: dict[int, int] = {}
        for pid, _ in connections:
            landed[pid] = landed.get(pid, 0) + 1
        publishers = set()
        for n in range(MESSAGES):
            publishers.add(await anyio.to_thread.run_sync(_post, port, {"n": n}))
        received: list[list[int]] = [[] for _ in connections]

        async def collect(got: list[int], connection: websockets.ClientConnection) -> None:
            while len(got) < MESSAGES:
                got.append(int(json.loads(await connection.recv())["n"]))

        # Everything should arrive within moments; 5 s bounds the wait for what never comes.
        with anyio.move_on_after(5):
            async with anyio.create_task_group() as tasks:
                for got, (_, connection) in zip(received, connections, strict=True):
                    tasks.start_soon(collect, got, connection)
        received = [sorted(got) for got in received]
    return landed, publishers, received


@pytest.fixture(params=["redis", "postgres", "kafka"])
def backbone_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


async def test_every_client_of_every_worker_gets_every_message(backbone_url, tmp_path):
    """4 workers on a shared backbone: all clients, whichever worker, receive all 10 messages."""
    with serve(backbone_url, tmp_path / "uvicorn.log") as port:
        landed, publishers, received = await run_scenario(port)
    print(f"clients per worker: {landed}; publishes taken by workers: {sorted(publishers)}")
    assert len(landed) == WORKERS
    assert all(got == list(range(MESSAGES)) for got in received), received


async def test_without_a_shared_backbone_messages_are_missed(tmp_path):
    """Negative control: memory:// is per worker, so clients of other workers miss messages."""
    with serve("memory://", tmp_path / "uvicorn.log") as port:
        landed, _, received = await run_scenario(port)
    assert len(landed) == WORKERS
    missed = sum(MESSAGES - len(got) for got in received)
    assert missed > 0, (
        "every client got everything without a shared backbone: the test proves nothing"
    )
