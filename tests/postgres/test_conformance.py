"""The conformance suite against the real server, reached through a TCP proxy to cut it off."""

from __future__ import annotations

import pytest

from tests.services.conformance import ThroughProxy

pytestmark = pytest.mark.postgres


class TestPostgresConformance(ThroughProxy):
    """Through the ``proxy`` fixture of tests/postgres/conftest.py."""

    @pytest.fixture
    def invalid_channels(self) -> list[str]:
        return ["x" * 64, "é" * 32, "nul\x00inside"]
