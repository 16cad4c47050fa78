"""The memory backbone passes the conformance suite every plugin must pass."""

import uuid

import pytest

from opal_broadcast.testing import BackboneConformance, FrozenLinkConformance, MemoryOutage


class TestMemoryConformance(BackboneConformance, FrozenLinkConformance):
    @pytest.fixture
    def backbone_url(self) -> str:
        return f"memory://conformance-{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def outage(self, backbone_url: str) -> MemoryOutage:
        return MemoryOutage(backbone_url)

    @pytest.fixture
    def freeze(self, outage: MemoryOutage) -> MemoryOutage:
        return outage
