"""The fault campaign on Kafka: broker restarts, broker SIGKILLs, a frozen broker.

Kafka's clients connect to the address the broker advertises, not to the bootstrap address, so a
proxy in front of the bootstrap address would not carry the data; the half-open case is the
broker stopped with SIGSTOP instead: every socket stays open and nothing is answered.
"""

import pytest

from tests.campaign.faults import frozen_broker, restarts
from tests.campaign.harness import RUNS, VARIANTS, Scenario, assert_passed, count, half_open, run
from tests.campaign.harness import scenario_name as name

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]

OPTIONS = {
    "publish_timeout": 1.0,
    "connect_timeout": 5.0,
    "probe_interval": 0.5,
    "probe_timeout": 1.0,
    "reconnect_max_delay": 2.0,
}
DOWN = 1.0
#: The issue's bound for Kafka: its clients find a restarted broker through metadata refreshes.
RESUME = 10.0
SLOW = {"resume_cap": 30.0, "startup_timeout": 60.0, "drain_timeout": 15.0}


@pytest.mark.parametrize("delay", VARIANTS)
@pytest.mark.parametrize("scale", RUNS)
@pytest.mark.parametrize("kill", [False, True], ids=["SIGTERM", "SIGKILL"])
async def test_broker_restarts(services, kafka_url, kill, delay, scale):
    """The broker stopped (SIGTERM, or SIGKILL) for a second and started again: a gap for every
    worker each time, and delivery resumes within 10 s of the broker answering again."""
    faults = count(3 if kill else 5, scale)
    scenario = Scenario(
        name("kafka", "SIGKILL" if kill else "restart", delay),
        kafka_url,
        OPTIONS,
        restarts(services, "kafka", down=DOWN, kill=kill),
        faults,
        gap_expected=True,
        resume_bound=RESUME,
        process_url=kafka_url,
        resubscribe_delay=delay,
        **SLOW,
    )
    assert_passed(await run(scenario))


@pytest.mark.parametrize("delay", VARIANTS)
@pytest.mark.parametrize("scale", RUNS)
async def test_frozen_broker(services, kafka_url, delay, scale):
    """SIGSTOP of the broker (sockets open, nothing answered): a gap within probe_interval +
    probe_timeout + 1 s, publish fails typed within publish_timeout + 0.5 s, delivery resumes
    within 10 s of SIGCONT."""
    hold, bounds = half_open(OPTIONS)
    bounds["resume_bound"] = max(bounds["resume_bound"], RESUME)
    faults = count(3, scale)
    scenario = Scenario(
        name("kafka", "SIGSTOP", delay),
        kafka_url,
        OPTIONS,
        frozen_broker(services, hold),
        faults,
        gap_expected=True,
        process_url=kafka_url,
        resubscribe_delay=delay,
        **SLOW,
        **bounds,
    )
    assert_passed(await run(scenario))
