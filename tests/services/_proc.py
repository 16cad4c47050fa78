"""Start servers detached, find them again by pid, stop them, and wait for them to be ready."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ._state import HOST, ServiceError, state_dir

__all__ = [
    "ensure_ports_free",
    "locked",
    "pid_alive",
    "port_open",
    "read_pid",
    "run_async",
    "spawn_detached",
    "terminate",
    "wait_ready",
]

T = TypeVar("T")

# The shell forks the server into the background and exits, so the server is re-parented to init:
# no Popen object outlives the call (no ResourceWarning) and it survives the `up` command. Python's
# start_new_session puts the shell, and so the server, in a new session and process group.
_LAUNCHER = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'


def spawn_detached(
    argv: list[str],
    *,
    log: Path,
    pid_file: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``argv`` in the background, output appended to ``log``; record and return its pid."""
    with log.open("a") as file:
        file.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n")
    result = subprocess.run(
        ["/bin/sh", "-c", _LAUNCHER, "sh", str(log), *argv],
        cwd=cwd,
        env=dict(env) if env is not None else None,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(result.stdout.strip())
    pid_file.write_text(f"{pid}\n")
    return pid


def read_pid(pid_file: Path) -> int | None:
    """The pid recorded in ``pid_file`` (first line), or None."""
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int | None, expect: str | None = None) -> bool:
    """Whether ``pid`` runs and is not a zombie; with ``expect``, its command line must contain it.

    The command-line check keeps a recycled pid (after a reboot) from being taken for a server.
    """
    if pid is None or pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
        # A multi-threaded process (a JVM) shows a zombie leader while its other threads still
        # exit and hold its sockets: it is gone only when no other thread is left.
        with contextlib.suppress(OSError):
            if len(os.listdir(f"/proc/{pid}/task")) > 1:
                return True
        _reap(pid)
        return False
    return expect is None or expect in cmdline


def _reap(pid: int) -> None:
    """Collect ``pid`` if it happens to be our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def terminate(pid: int | None, *, kill: bool = False, timeout: float = 30.0) -> None:
    """Stop ``pid``: SIGTERM, wait (SIGKILL after ``timeout``); or SIGKILL at once if ``kill``."""
    if not pid_alive(pid):
        return
    assert pid is not None
    steps = (
        [(signal.SIGKILL, 10.0)] if kill else [(signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)]
    )
    for sig, wait in steps:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)
    raise ServiceError("process", f"pid {pid} did not exit after SIGKILL")


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_ports_free(name: str, *ports: int) -> None:
    """Fail clearly if another process (not this state dir's server) holds one of ``ports``."""
    deadline = time.monotonic() + 3.0  # a server that was just killed may still be exiting
    while (busy := [port for port in ports if port_open(port)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    if busy:
        raise ServiceError(
            name,
            f"{HOST} port(s) {', '.join(map(str, busy))} already in use by another process "
            f"(a server from another state dir?); find it with: ss -ltnp 'sport = :{busy[0]}'",
        )


def wait_ready(
    name: str,
    ready: Callable[[], bool],
    *,
    alive: Callable[[], bool],
    log: Path,
    timeout: float,
    interval: float = 0.1,
) -> None:
    """Poll ``ready`` until true; fail with the log if ``alive`` turns false or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if not alive():
            raise ServiceError(name, "the server exited during startup", log)
        if time.monotonic() > deadline:
            raise ServiceError(name, f"not ready after {timeout:.0f} s", log)
        time.sleep(interval)


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even when an event loop is already running.

    Inside a running loop (an async test calling ``restart()``) it runs in a worker thread with its
    own loop; the calling loop is blocked meanwhile, so async callers should use ``to_thread``.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Hold an exclusive lock on service ``name`` so two commands do not start it twice."""
    locks = state_dir() / "locks"
    locks.mkdir(exist_ok=True)
    with (locks / f"{name}.lock").open("a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)
