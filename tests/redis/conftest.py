"""Fixtures for the Redis backbone's tests: asyncio only, outages, private unix-socket servers."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.services import TcpProxy
from tests.services.fixtures import missing

#: Every wait in these tests is bounded by this many seconds.
DEADLINE = 20.0

#: Short timings so losses are found and repaired within a second or two.
FAST = {
    "publish_timeout": 2.0,
    "connect_timeout": 3.0,
    "probe_interval": 0.2,
    "probe_timeout": 0.5,
    "reconnect_max_delay": 0.3,
}


@pytest.fixture
def anyio_backend() -> str:
    """The plugin runs on asyncio only (redis-py's asyncio client)."""
    return "asyncio"


class ServerRestart:
    """:class:`BackboneOutage` by stopping the Redis test servers and starting them again."""

    def __init__(self, services: ModuleType) -> None:
        self.services = services
        self.down = False

    async def interrupt(self) -> None:
        """Stop every Redis test instance (SIGTERM); existing connections see EOF."""
        self.down = True
        await self.services.astop("redis")

    async def restore(self) -> None:
        """Start them again (a no-op when they run)."""
        if self.down:
            await self.services.astart("redis")
            self.down = False


@pytest.fixture
def server_restart(services: ModuleType) -> Iterator[ServerRestart]:
    """A ServerRestart that is always undone, even when the test fails midway."""
    outage = ServerRestart(services)
    yield outage
    if outage.down:
        services.start("redis")


@pytest.fixture
async def proxy_to(
    tcp_proxy: Callable[..., TcpProxy],
) -> AsyncIterator[Callable[[str], TcpProxy]]:
    """``proxy_to(url)``: a started TCP proxy in front of ``url``, closed after the test."""
    proxies: list[TcpProxy] = []

    def make(url: str) -> TcpProxy:
        proxy = tcp_proxy(url)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        await proxy.aclose()


@pytest.fixture(scope="session")
def unix_socket_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private redis-server listening on a unix socket only (no TCP port); its socket path."""
    with private_redis(tmp_path_factory, "redis-unix") as socket:
        yield socket


@pytest.fixture(scope="session")
def roomy_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server (unix socket) that never drops a slow pub/sub client; its URL.

    The shared server keeps Redis's default ``client-output-buffer-limit pubsub 32mb 8mb 60``:
    a subscriber owed more than 32 MB (one 40 MiB message is enough) is disconnected at once.
    """
    options = ("--client-output-buffer-limit", "pubsub 0 0 0")
    with private_redis(tmp_path_factory, "redis-roomy", *options) as socket:
        yield f"unix://{socket}"


@contextlib.contextmanager
def private_redis(
    tmp_path_factory: pytest.TempPathFactory, name: str, *options: str
) -> Iterator[Path]:
    """Run a redis-server on a unix socket only (no TCP port) while the caller holds it."""
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(server).exists():
        missing("redis-server is not installed; run: uv run python -m tests.services up redis")
    directory = tmp_path_factory.mktemp(name)
    socket = directory / "redis.sock"
    process = subprocess.Popen(
        [
            server,
            "--port",
            "0",
            "--unixsocket",
            str(socket),
            "--save",
            "",
            "--dir",
            str(directory),
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server on {socket} did not start")
            time.sleep(0.02)
        yield socket
    finally:
        process.terminate()
        process.wait(timeout=10)
