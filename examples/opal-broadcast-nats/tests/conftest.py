"""A real nats-server for the tests: started once per session on a free port, stopped at the end.

The binary comes from the system (Debian/Ubuntu: ``apt-get install nats-server``; elsewhere a
release from nats.io); ``NATS_SERVER`` may name it explicitly.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


class NatsServer:
    """One nats-server process on a fixed port, and the conformance suite's ``outage``.

    ``interrupt()`` stops the process (every client sees its connection close); ``restore()``
    starts it again on the same port. Both are idempotent.
    """

    def __init__(self, binary: str, workdir: Path, *args: str) -> None:
        self.binary = binary
        self.workdir = workdir
        self.args = args
        self.port = free_port()
        self.log = workdir / f"nats-server-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:<port>`` (add credentials yourself when the server wants them)."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        if self._process is not None:
            return
        argv = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), *self.args]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                argv, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 10.0
        while not _accepts(self.port):
            code = self._process.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"{' '.join(argv)} did not start ({'exit ' + str(code) if code is not None else 'timeout'})."
                    f" Its log:\n{tail}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGCONT)  # a paused server would ignore SIGTERM until resumed
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    async def interrupt(self) -> None:
        await asyncio.to_thread(self.stop)

    async def restore(self) -> None:
        await asyncio.to_thread(self.start)

    async def freeze(self) -> None:
        """SIGSTOP the server: connections stay open, nothing is answered."""
        assert self._process is not None, "the server is not running"
        self._process.send_signal(signal.SIGSTOP)

    async def thaw(self) -> None:
        """SIGCONT the server."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _binary() -> str:
    explicit = os.environ.get("NATS_SERVER")
    # Debian puts it in /usr/sbin, which is not on every user's PATH.
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    found = shutil.which(explicit or "nats-server", path=path)
    if found is None:
        pytest.fail(
            f"{explicit or 'nats-server'} was not found: these tests run a real NATS server. "
            "Install it (Debian/Ubuntu: apt-get install nats-server) or set NATS_SERVER to "
            "the binary's path.",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server without authentication, for the whole session."""
    server = NatsServer(_binary(), tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server that wants user ``alice`` with password ``s3cr#t/pw`` (URL: ``s3cr%23t%2Fpw``)."""
    server = NatsServer(
        _binary(), tmp_path_factory.mktemp("nats-auth"), "--user", "alice", "--pass", "s3cr#t/pw"
    )
    server.start()
    yield server
    server.stop()
