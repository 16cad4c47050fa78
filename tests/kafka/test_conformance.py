"""The Kafka backbone passes the conformance suite every opal-broadcast plugin must pass."""

from __future__ import annotations

import pytest

from opal_broadcast.testing import BackboneConformance

from .conftest import BrokerOutage

pytestmark = pytest.mark.kafka


class TestKafkaConformance(BackboneConformance):
    @pytest.fixture
    def backbone_url(self, kafka_url: str) -> str:
        return kafka_url

    @pytest.fixture
    def outage(self, broker_outage: BrokerOutage) -> BrokerOutage:
        return broker_outage
