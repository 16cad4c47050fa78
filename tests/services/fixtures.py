"""pytest fixtures for the test servers; load with ``pytest_plugins = ["tests.services.fixtures"]``.

The fixtures never start a server (Kafka alone takes seconds): each checks once per session that
its service answers, then hands out a URL. A service that is down skips the test with the command
that starts it, except under ``CI=true``, where it fails the test: CI must not pass by skipping.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from types import ModuleType
from typing import NoReturn

import pytest

from . import TcpProxy, is_up, urls
from ._tls import CertPaths, cert_paths

__all__ = [
    "kafka_sasl_url",
    "kafka_url",
    "missing",
    "postgres_admin_url",
    "postgres_password_url",
    "postgres_tls_url",
    "postgres_url",
    "redis_acl_url",
    "redis_limited_url",
    "redis_password_url",
    "redis_url",
    "rediss_url",
    "require_service",
    "services",
    "tcp_proxy",
    "test_ca",
]


@pytest.fixture(scope="session")
def require_service() -> Callable[[str], None]:
    """``require_service(name)``: skip (or, with ``CI=true``, fail) unless ``name`` answers.

    The answer is cached for the session; tests that stop a service must start it again.
    """
    answers: dict[str, bool] = {}

    def require(name: str) -> None:
        if name not in answers:
            answers[name] = is_up(name)
        if answers[name]:
            return
        missing(
            f"the {name} test service is not running; start it with: "
            f"uv run python -m tests.services up {name}"
        )

    return require


def missing(message: str) -> NoReturn:
    """Skip the test, or fail it under ``CI=true``: CI must not go green by skipping."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a missing service fails, never skips)", pytrace=False)
    pytest.skip(message)


def _url(require: Callable[[str], None], service: str, key: str) -> str:
    require(service)
    return urls(service)[key]


@pytest.fixture(scope="session")
def postgres_url(require_service: Callable[[str], None]) -> str:
    """Role ``opal`` (trust login), database ``opal``."""
    return _url(require_service, "postgres", "postgres")


@pytest.fixture(scope="session")
def postgres_password_url(require_service: Callable[[str], None]) -> str:
    """Role ``opal_pw`` with its password (scram-sha-256 is required for it)."""
    return _url(require_service, "postgres", "postgres_password")


@pytest.fixture(scope="session")
def postgres_tls_url(require_service: Callable[[str], None]) -> str:
    """Role ``opal_tls`` (TLS-only), ``sslmode=verify-full&sslrootcert=<test CA>``."""
    return _url(require_service, "postgres", "postgres_tls")


@pytest.fixture(scope="session")
def postgres_admin_url(require_service: Callable[[str], None]) -> str:
    """The ``postgres`` superuser (trust), for fault injection and inspection."""
    return _url(require_service, "postgres", "postgres_admin")


@pytest.fixture(scope="session")
def redis_url(require_service: Callable[[str], None]) -> str:
    """Redis without auth (port 26379)."""
    return _url(require_service, "redis", "redis")


@pytest.fixture(scope="session")
def redis_password_url(require_service: Callable[[str], None]) -> str:
    """Redis ``requirepass``: the default user's password only (port 26380)."""
    return _url(require_service, "redis", "redis_password")


@pytest.fixture(scope="session")
def redis_acl_url(require_service: Callable[[str], None]) -> str:
    """Redis ACL user ``opal`` with its password (port 26380)."""
    return _url(require_service, "redis", "redis_acl")


@pytest.fixture(scope="session")
def redis_limited_url(require_service: Callable[[str], None]) -> str:
    """Redis ACL user ``opal_limited``: may use channels named ``allowed-*`` only."""
    return _url(require_service, "redis", "redis_limited")


@pytest.fixture(scope="session")
def rediss_url(require_service: Callable[[str], None]) -> str:
    """Redis over TLS only (port 26381), ``?ssl_ca_certs=<test CA>``; see also ``test_ca``."""
    return _url(require_service, "redis", "rediss")


@pytest.fixture(scope="session")
def rediss_password_url(require_service: Callable[[str], None]) -> str:
    """The default user's password over TLS (port 26382, the auth server), ``?ssl_ca_certs=``."""
    return _url(require_service, "redis", "rediss_password")


@pytest.fixture(scope="session")
def kafka_url(require_service: Callable[[str], None]) -> str:
    """``kafka://127.0.0.1:29092`` (PLAINTEXT)."""
    return _url(require_service, "kafka", "kafka")


@pytest.fixture(scope="session")
def kafka_sasl_url(require_service: Callable[[str], None]) -> str:
    """SASL_PLAINTEXT/PLAIN listener 29094: ``kafka://opal:<password>@127.0.0.1:29094?...``."""
    return _url(require_service, "kafka", "kafka_sasl")


@pytest.fixture(scope="session")
def test_ca() -> CertPaths:
    """The test PKI: ``ca_file``, ``client_cert``/``client_key`` (CN=opal_cert), server files."""
    paths = cert_paths()
    if not paths.ca_file.exists():
        missing("no test CA yet; run: uv run python -m tests.services up")
    return paths


@pytest.fixture(scope="session")
def services() -> ModuleType:
    """The control API (``tests.services``): ``stop``, ``start``, ``restart``, ``astop``, ...

    Stopping a service affects every later test: restart it before the test ends.
    """
    return sys.modules[__package__ or "tests.services"]


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[..., TcpProxy]]:
    """Factory: ``tcp_proxy(url)`` or ``tcp_proxy(host, port)``; use the result with ``async with``.

    asyncio only. The test fails at teardown if a proxy was started but not closed.
    """
    made: list[TcpProxy] = []

    def factory(target: str, port: int | None = None) -> TcpProxy:
        proxy = TcpProxy.for_url(target) if port is None else TcpProxy(target, port)
        made.append(proxy)
        return proxy

    yield factory
    leaked = [proxy.address for proxy in made if proxy.port and not proxy.closed]
    if leaked:
        pytest.fail(f"TcpProxy left open (use `async with`): {leaked}", pytrace=False)


@pytest.fixture
def refused_port() -> Iterator[Callable[[], int]]:
    """Call it for a loopback port held (bound, never listening) until the test ends, so that
    connecting to it is refused and nothing else can take it meanwhile."""
    with ExitStack() as held:

        def port() -> int:
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

        yield port
