"""Run an ASGI server (uvicorn, gunicorn) in a child process for a test, until it answers."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def uvicorn_command(python: str | Path, arguments: list[str]) -> Callable[[int], list[str]]:
    """``python -m uvicorn ARGUMENTS`` on loopback, as a command for :func:`serve`."""

    def command(port: int) -> list[str]:
        return [
            str(python),
            "-m",
            "uvicorn",
            *arguments,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]

    return command


@contextmanager
def serve(
    command: Callable[[int], list[str]],
    env: Mapping[str, str],
    log: Path,
    *,
    health_path: str = "",
    workers: int = 0,
    deadline: float = 90,
) -> Iterator[int]:
    """Run ``command(port)`` for a free port; yields the port once it answers.

    Ready means the port accepts connections, or ``health_path`` answers when given, and the log
    says ``workers`` times that a worker's application started (one up is not all up: clients
    sent meanwhile would all land on the early ones). Output goes to ``log`` (quoted in the error
    if it never gets ready; info level is needed to count workers); the working directory is
    ``log``'s.
    """
    port = free_port()
    with log.open("w") as output:
        process = subprocess.Popen(
            command(port), env=dict(env), stdout=output, stderr=subprocess.STDOUT, cwd=log.parent
        )
    try:
        give_up = time.monotonic() + deadline
        while not (_answers(port, health_path) and _started(log) >= workers):
            if process.poll() is not None:
                raise AssertionError(f"the server exited: {log.read_text()[-3000:]}")
            if time.monotonic() > give_up:
                raise AssertionError(
                    f"the server is not ready in {deadline:g} s: {log.read_text()[-3000:]}"
                )
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _started(log: Path) -> int:
    """How many workers have logged that their application started."""
    return log.read_text(errors="replace").count("Application startup complete.")


def _answers(port: int, health_path: str) -> bool:
    try:
        if health_path:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{health_path}", timeout=1):
                return True
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
