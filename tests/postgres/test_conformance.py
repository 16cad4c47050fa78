"""The conformance suite against the real server, reached through a TCP proxy to cut it off."""

from __future__ import annotations

import pytest

from opal_broadcast.testing import BackboneConformance
from tests.services import TcpProxy

pytestmark = pytest.mark.postgres


class ProxyOutage:
    """Resets every connection and refuses new ones until restored (a network outage)."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy

    async def interrupt(self) -> None:
        self.proxy.cut(refuse_new=True)

    async def restore(self) -> None:
        self.proxy.resume()


class TestPostgresConformance(BackboneConformance):
    @pytest.fixture
    def backbone_url(self, proxy: TcpProxy) -> str:
        return proxy.url()

    @pytest.fixture
    def outage(self, proxy: TcpProxy) -> ProxyOutage:
        return ProxyOutage(proxy)

    @pytest.fixture
    def invalid_channels(self) -> list[str]:
        return ["x" * 64, "é" * 32, "nul\x00inside"]
