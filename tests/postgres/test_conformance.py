"""The conformance suite against the real server, reached through a TCP proxy to cut it off."""

from __future__ import annotations

import pytest

from opal_broadcast.testing import BackboneConformance, FrozenLinkConformance
from tests.services import TcpProxy

pytestmark = pytest.mark.postgres


class TestPostgresConformance(BackboneConformance, FrozenLinkConformance):
    @pytest.fixture
    def backbone_url(self, proxy: TcpProxy) -> str:
        return proxy.url()

    @pytest.fixture
    def outage(self, proxy: TcpProxy) -> TcpProxy:
        return proxy  # cut() every connection, refuse new ones, until restore()

    @pytest.fixture
    def freeze(self, proxy: TcpProxy) -> TcpProxy:
        return proxy  # stall(): connections stay open, nothing is forwarded, until resume()

    @pytest.fixture
    def invalid_channels(self) -> list[str]:
        return ["x" * 64, "é" * 32, "nul\x00inside"]
