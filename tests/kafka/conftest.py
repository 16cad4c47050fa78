"""Fixtures for the Kafka backbone's tests: asyncio only, broker outages, unique channels."""

from __future__ import annotations

import uuid
from types import ModuleType

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """aiokafka is an asyncio client: the kafka:// backbone declares asyncio only."""
    return "asyncio"


@pytest.fixture
def channel() -> str:
    """A channel (and so a topic) no other test or run uses: the broker keeps its topics."""
    return f"kafka-test-{uuid.uuid4().hex[:12]}"


class BrokerOutage:
    """Stops the test broker (SIGTERM, or SIGKILL) and starts it again on the same data.

    ``restore`` is a quick no-op when the broker already runs, so calling it twice is fine.
    """

    def __init__(self, services: ModuleType, *, kill: bool = False) -> None:
        self.services = services
        self.kill = kill

    async def interrupt(self) -> None:
        await self.services.astop("kafka", kill=self.kill)

    async def restore(self) -> None:
        await self.services.astart("kafka")


@pytest.fixture
def broker_outage(services: ModuleType, kafka_url: str) -> BrokerOutage:
    """A SIGTERM outage of the test broker (``kafka_url`` makes sure it runs first)."""
    return BrokerOutage(services)
