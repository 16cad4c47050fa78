"""The NATS backbone passes the conformance suite every opal-broadcast plugin must pass."""

from __future__ import annotations

import pytest

from opal_broadcast.testing import BackboneConformance, FrozenLinkConformance

from .conftest import NatsServer


class TestNatsConformance(BackboneConformance, FrozenLinkConformance):
    @pytest.fixture
    def backbone_url(self, nats_server: NatsServer) -> str:
        return nats_server.url

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"  # nats-py is an asyncio client

    @pytest.fixture
    def outage(self, nats_server: NatsServer) -> NatsServer:
        return nats_server

    @pytest.fixture
    def freeze(self, nats_server: NatsServer) -> NatsServer:
        return nats_server  # SIGSTOP: the TCP connections stay open, nothing is answered
