"""Shared test configuration: async backends, and the real backbone services' fixtures."""

import pytest

pytest_plugins = ["tests.services.fixtures"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Core code is anyio code: run it on both asyncio and trio (plugins may narrow this)."""
    return str(request.param)
