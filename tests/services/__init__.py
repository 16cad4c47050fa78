"""Real backbones for the tests: PostgreSQL, Redis and Kafka servers started by the repo itself.

Command line (from the repo root)::

    uv run python -m tests.services up [postgres redis kafka]   # start what is not running
    uv run python -m tests.services status | down | env
    uv run python -m tests.services stop|start|restart NAME [--kill]

The servers run detached on fixed 127.0.0.1 ports with their state under
``OPAL_TEST_SERVICES_DIR`` (default ``/tmp/opal-broadcast-services``); missing Debian packages are
installed with apt-get (as root) and the Kafka jars are fetched with Maven, both once. See
``_postgres``, ``_redis`` and ``_kafka`` for the logins each server offers, and ``fixtures`` for
the pytest side.

The control functions are synchronous and block until the server is stopped or ready. From an
async test use :func:`astart`, :func:`astop` or :func:`arestart` (worker thread) so the event loop
keeps running, e.g. while a client under test notices the outage.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

from . import _kafka, _postgres, _redis
from ._faults import close_redis_client, kill_redis_clients, terminate_pg_backends
from ._install import ensure_packages
from ._proc import locked
from ._proxy import TcpProxy
from ._state import NAMES, ServiceError, state_dir, write_urls
from ._tls import CertPaths, cert_paths, ensure_certs

__all__ = [
    "NAMES",
    "CertPaths",
    "ServiceError",
    "ServiceStatus",
    "TcpProxy",
    "arestart",
    "astart",
    "astop",
    "cert_paths",
    "close_redis_client",
    "down",
    "ensure_up",
    "is_up",
    "kill_redis_clients",
    "restart",
    "start",
    "state_dir",
    "status",
    "stop",
    "terminate_pg_backends",
    "up",
    "urls",
]


class _Service(Protocol):
    """What each of ``_postgres``, ``_redis`` and ``_kafka`` provides (as module functions)."""

    def urls(self) -> dict[str, str]: ...
    def pids(self) -> list[int]: ...
    def logs(self) -> list[Path]: ...
    def is_running(self) -> bool: ...
    def is_ready(self) -> bool: ...
    def start(self, timeout: float = ...) -> bool: ...
    def stop(self, kill: bool = ...) -> None: ...


_SERVICES: dict[str, _Service] = {"postgres": _postgres, "redis": _redis, "kafka": _kafka}


@dataclass(frozen=True)
class ServiceStatus:
    """One service as :func:`status` sees it."""

    name: str
    running: bool
    ready: bool
    pids: tuple[int, ...]
    logs: tuple[Path, ...]


def _service(name: str) -> _Service:
    try:
        return _SERVICES[name]
    except KeyError:
        raise ValueError(f"unknown service {name!r}; known: {', '.join(NAMES)}") from None


def _prepare(names: tuple[str, ...]) -> None:
    """Install missing packages and make the test certificates (quick when all is there)."""
    ensure_packages([*names, "tls", "nats"])
    ensure_certs()


def urls(*names: str) -> dict[str, str]:
    """The test URLs of ``names`` (default: all), plus the test CA's file paths
    (``tls_ca_file``, ``tls_client_cert``, ``tls_client_key``)."""
    certs = cert_paths()
    result: dict[str, str] = {}
    for name in names or NAMES:
        result.update(_service(name).urls())
    result.update(
        tls_ca_file=str(certs.ca_file),
        tls_client_cert=str(certs.client_cert),
        tls_client_key=str(certs.client_key),
    )
    return result


def is_up(name: str) -> bool:
    """Quick check: the process runs and answers a client round trip (well under a second)."""
    service = _service(name)
    return service.is_running() and service.is_ready()


def status() -> list[ServiceStatus]:
    """Every service's processes and readiness."""
    result = []
    for name in NAMES:
        service = _service(name)
        running = service.is_running()
        result.append(
            ServiceStatus(
                name,
                running,
                running and service.is_ready(),
                tuple(service.pids()),
                tuple(service.logs()),
            )
        )
    return result


def start(name: str) -> bool:
    """Start ``name`` unless it runs, on its existing data; wait until ready.

    Returns True if it had to be started. Raises :class:`ServiceError` (with the log) on failure.
    """
    service = _service(name)
    _prepare((name,))
    with locked(name):
        return service.start()


def stop(name: str, *, kill: bool = False) -> None:
    """Stop ``name`` and wait for it to exit; ``kill`` skips the clean shutdown (SIGKILL, or
    Postgres' immediate mode). The data stays for the next :func:`start`."""
    service = _service(name)
    with locked(name):
        service.stop(kill=kill)


def restart(name: str, *, kill: bool = False) -> None:
    """:func:`stop` then :func:`start` on the same data directory (nothing is re-initialised)."""
    stop(name, kill=kill)
    start(name)


async def astart(name: str) -> bool:
    """:func:`start` in a worker thread, so the calling event loop keeps running."""
    import anyio.to_thread

    return await anyio.to_thread.run_sync(start, name)


async def astop(name: str, *, kill: bool = False) -> None:
    """:func:`stop` in a worker thread."""
    import anyio.to_thread

    await anyio.to_thread.run_sync(partial(stop, name, kill=kill))


async def arestart(name: str, *, kill: bool = False) -> None:
    """:func:`restart` in a worker thread."""
    import anyio.to_thread

    await anyio.to_thread.run_sync(partial(restart, name, kill=kill))


def up(*names: str) -> dict[str, tuple[bool, float]]:
    """Start the named services (default: all) in parallel; per name: (had to start, seconds).

    Writes ``urls.json``. If any fails, the others still get their chance; then raises
    :class:`ServiceError` with every failure.
    """
    selected = tuple(name for name in NAMES if name in names) if names else NAMES
    for name in names:
        _service(name)
    _prepare(selected)

    def timed(name: str) -> tuple[bool, float]:
        begin = time.monotonic()
        with locked(name):
            started = _service(name).start()
        return started, time.monotonic() - begin

    with ThreadPoolExecutor(len(selected)) as pool:
        futures = {name: pool.submit(timed, name) for name in selected}
    results, errors = {}, []
    for name, future in futures.items():
        error = future.exception()
        if error is None:
            results[name] = future.result()
        else:
            if not isinstance(error, ServiceError):
                wrapped = ServiceError(name, repr(error))
                wrapped.__cause__ = error
                error = wrapped
            errors.append(error)
    write_urls(urls())
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ServiceError(", ".join(e.name for e in errors), "\n\n".join(map(str, errors)))
    return results


def ensure_up(*names: str) -> dict[str, str]:
    """:func:`up` then :func:`urls`: what a fixture or a script that needs servers calls."""
    up(*names)
    return urls()


def down() -> None:
    """Stop every service (cleanly), the reverse of the start order."""
    for name in reversed(NAMES):
        stop(name)
