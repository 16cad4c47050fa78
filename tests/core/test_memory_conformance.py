"""The memory backbone passes the conformance suite every plugin must pass."""

import uuid
from collections.abc import Iterator

import pytest

from opal_broadcast.testing import (
    BackboneConformance,
    FrozenLinkConformance,
    MemoryOutage,
    restore_memory,
    silence_memory,
)


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

    @pytest.fixture
    def silent_url(self) -> Iterator[str]:
        """A silent bus: connecting to it never completes."""
        url = f"memory://silent-{uuid.uuid4().hex[:8]}"
        silence_memory(url)
        yield url
        restore_memory(url)
