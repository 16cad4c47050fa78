"""Postgres backbone tests: asyncio only (asyncpg), real server from ``tests.services``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlencode

import pytest

from tests.services import TcpProxy


@pytest.fixture
def anyio_backend() -> str:
    """The plugin runs on asyncio only (it declares ``async_libraries=("asyncio",)``)."""
    return "asyncio"


@pytest.fixture
def channel() -> str:
    """A channel name no other test uses."""
    return f"pg-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def app_name() -> str:
    """A unique application_name: the plugin's sessions are ``<it>/listen`` and ``<it>/publish``."""
    return f"opal-test-{uuid.uuid4().hex[:10]}"


def with_query(url: str, **params: object) -> str:
    """``url`` with ``params`` added to its query string."""
    joiner = "&" if "?" in url else "?"
    return url + joiner + urlencode({k: str(v) for k, v in params.items()})


@pytest.fixture
def pg_url(postgres_url: str, app_name: str) -> str:
    """The main test URL, with this test's application_name."""
    return with_query(postgres_url, application_name=app_name)


@pytest.fixture
async def proxy(tcp_proxy: Callable[..., TcpProxy], pg_url: str) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of the server (``proxy.url()`` is ``pg_url`` through it)."""
    async with tcp_proxy(pg_url) as started:
        yield started
