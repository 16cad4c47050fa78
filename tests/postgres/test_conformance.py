"""The conformance suite against the real server, reached through a TCP proxy to cut it off."""

from __future__ import annotations

import pytest

from tests.postgres.conftest import with_query
from tests.services import TcpProxy
from tests.services.conformance import ThroughProxy

pytestmark = pytest.mark.postgres


class TestPostgresConformance(ThroughProxy):
    """Through the ``proxy`` fixture of tests/postgres/conftest.py."""

    @pytest.fixture
    def invalid_channels(self) -> list[str]:
        return ["x" * 64, "é" * 32, "nul\x00inside"]

    @pytest.fixture
    def backbone_url(self, proxy: TcpProxy) -> str:
        # Without TLS: asyncpg (0.30, 0.31) leaves a future with an exception nobody retrieves
        # when a connect is cancelled as its TCP connection completes during the TLS upgrade
        # request (MagicStack/asyncpg#1211, #1310), which asyncio logs and the suite's cancelled
        # connects hit at random. TLS logins are tested in test_auth.py.
        return with_query(proxy.url(), sslmode="disable")
