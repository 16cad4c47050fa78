"""The fault campaign on ``memory://``: outages, dropped connections and a frozen bus.

The bus lives in this process, so the second publisher is a second connection of this process
(``share_connection=False``) rather than another process.
"""

import uuid

import anyio
import pytest

from opal_broadcast.testing import freeze_memory, restore_memory, simulate_memory_loss
from tests.campaign.harness import (
    RUNS,
    VARIANTS,
    Scenario,
    assert_passed,
    count,
    half_open,
    now,
    run,
)
from tests.campaign.harness import scenario_name as name
from tests.campaign.history import Fault

pytestmark = pytest.mark.anyio

OPTIONS = {
    "publish_timeout": 1.0,
    "connect_timeout": 3.0,
    "probe_interval": 0.5,
    "probe_timeout": 1.0,
    "reconnect_max_delay": 0.3,
}
#: As long as the issue's restarts: one second down.
DOWN = 1.0
RESUME = 1.0


@pytest.fixture
def url() -> str:
    return f"memory://campaign-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("delay", VARIANTS)
@pytest.mark.parametrize("scale", RUNS)
async def test_outages(url, delay, scale):
    """The bus goes down for a second and comes back: a gap for every worker, resumed within 1 s."""

    async def outage(i: int) -> Fault:
        started = now()
        simulate_memory_loss(url, stay_down=True)
        try:
            await anyio.sleep(DOWN)
        finally:
            restore_memory(url)
        return Fault(f"outage {i + 1}", started, now())

    scenario = Scenario(
        name("memory://", "outage", delay),
        url,
        OPTIONS,
        outage,
        count(20, scale),
        gap_expected=True,
        resume_bound=RESUME,
        resubscribe_delay=delay,
    )
    assert_passed(await run(scenario))


@pytest.mark.parametrize("delay", VARIANTS)
@pytest.mark.parametrize("scale", RUNS)
async def test_dropped_connections(url, delay, scale):
    """Every connection dropped, the bus still up (a server-side kill): a gap, resumed within 1 s."""

    async def drop(i: int) -> Fault:
        started = now()
        simulate_memory_loss(url)
        return Fault(f"drop {i + 1}", started, now())

    scenario = Scenario(
        name("memory://", "drop", delay),
        url,
        OPTIONS,
        drop,
        count(50, scale),
        gap_expected=True,
        resume_bound=RESUME,
        resubscribe_delay=delay,
    )
    assert_passed(await run(scenario))


@pytest.mark.parametrize("delay", VARIANTS)
@pytest.mark.parametrize("scale", RUNS)
async def test_frozen_bus(url, delay, scale):
    """A frozen bus (publishes and probes hang): a gap within probe_interval + probe_timeout + 1 s,
    publish fails typed within publish_timeout + 0.5 s, and delivery resumes after the thaw."""
    hold, bounds = half_open(OPTIONS)

    async def freeze(i: int) -> Fault:
        started = now()
        freeze_memory(url)
        try:
            await anyio.sleep(hold)
        finally:
            restore_memory(url)
        return Fault(f"freeze {i + 1}", started, now())

    scenario = Scenario(
        name("memory://", "freeze", delay),
        url,
        OPTIONS,
        freeze,
        count(5, scale),
        gap_expected=True,
        resubscribe_delay=delay,
        **bounds,
    )
    assert_passed(await run(scenario))
