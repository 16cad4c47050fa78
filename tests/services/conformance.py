"""The conformance suite through a :class:`TcpProxy`, for the backbones our tests reach that way."""

from __future__ import annotations

import pytest

from opal_broadcast.testing import BackboneConformance, FrozenLinkConformance

from ._proxy import TcpProxy

__all__ = ["ThroughProxy"]


class ThroughProxy(BackboneConformance, FrozenLinkConformance):
    """The whole suite with a frozen link: the proxy's ``cut()`` is the outage, its ``stall()``
    the freeze. Subclasses provide a ``proxy`` fixture: a started proxy in front of the server."""

    @pytest.fixture
    def backbone_url(self, proxy: TcpProxy) -> str:
        return proxy.url()

    @pytest.fixture
    def outage(self, proxy: TcpProxy) -> TcpProxy:
        return proxy  # cut() every connection, refuse new ones, until restore()

    @pytest.fixture
    def freeze(self, proxy: TcpProxy) -> TcpProxy:
        return proxy  # stall(): connections stay open, nothing is forwarded, until resume()
