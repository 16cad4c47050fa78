"""The fault campaign on PostgreSQL: restarts, pg_terminate_backend of each session, a half-open
link."""

import uuid

import pytest

from tests.campaign.faults import killing, restarts, stalled_proxy, with_query
from tests.campaign.harness import RUNS, VARIANTS, Scenario, assert_passed, count, half_open, run
from tests.campaign.harness import scenario_name as name
from tests.services import terminate_pg_backends

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

OPTIONS = {
    "publish_timeout": 1.0,
    "connect_timeout": 3.0,
    "probe_interval": 0.5,
    "probe_timeout": 1.0,
    "reconnect_max_delay": 0.3,
}
DOWN = 1.0
RESUME = 1.0


@pytest.fixture
def app_name() -> str:
    """This test's application_name: the plugin's sessions are ``<it>/listen`` and ``<it>/publish``
    (in both processes), so terminations hit this test's sessions only."""
    return f"campaign-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def url(postgres_url, app_name) -> str:
    return with_query(postgres_url, application_name=app_name)


def terminate(application_name: str):
    async def kill() -> int:
        return await terminate_pg_backends(application_name=application_name)

    return kill


@pytest.mark.parametrize("delay", VARIANTS)
@pytest.mark.parametrize("scale", RUNS)
async def test_restarts(services, url, delay, scale):
    """PostgreSQL stopped for a second and started again: a gap for every worker each time, and
    delivery resumes within 1 s of the server accepting connections again."""
    faults = count(20, scale)
    scenario = Scenario(
        name("postgres", "restart", delay),
        url,
        OPTIONS,
        restarts(services, "postgres", down=DOWN),
        faults,
        gap_expected=True,
        resume_bound=RESUME,
        process_url=url,
        resubscribe_delay=delay,
    )
    assert_passed(await run(scenario))


@pytest.mark.parametrize("delay", VARIANTS)
@pytest.mark.parametrize("scale", RUNS)
async def test_listener_terminated(url, app_name, delay, scale):
    """pg_terminate_backend of the listening session: a gap for every worker, resumed within 1 s."""
    faults = count(25, scale)
    scenario = Scenario(
        name("postgres", "kill-listener", delay),
        url,
        OPTIONS,
        killing("terminate listener", terminate(f"{app_name}/listen")),
        faults,
        gap_expected=True,
        resume_bound=RESUME,
        process_url=url,
        resubscribe_delay=delay,
    )
    assert_passed(await run(scenario))


@pytest.mark.parametrize("delay", VARIANTS)
@pytest.mark.parametrize("scale", RUNS)
async def test_publishing_sessions_terminated(url, app_name, delay, scale):
    """pg_terminate_backend of the publishing sessions (both processes'): no gap for anyone, and
    delivery goes on within 1 s."""
    faults = count(25, scale)
    scenario = Scenario(
        name("postgres", "kill-publishing", delay),
        url,
        OPTIONS,
        killing("terminate publishing", terminate(f"{app_name}/publish")),
        faults,
        gap_expected=False,
        resume_bound=RESUME,
        process_url=url,
        resubscribe_delay=delay,
    )
    assert_passed(await run(scenario))


@pytest.mark.parametrize("delay", VARIANTS)
@pytest.mark.parametrize("scale", RUNS)
async def test_half_open_link(tcp_proxy, url, delay, scale):
    """This process reaches PostgreSQL through a proxy that black-holes both directions (no FIN,
    no RST); the other process publishes directly. A gap within probe_interval + probe_timeout +
    1 s, publish fails typed within publish_timeout + 0.5 s, delivery resumes when traffic passes
    again (see harness.half_open for the bounds)."""
    hold, bounds = half_open(OPTIONS)
    faults = count(5, scale)
    async with tcp_proxy(url) as proxy:
        scenario = Scenario(
            name("postgres", "half-open", delay),
            proxy.url(),
            OPTIONS,
            stalled_proxy(proxy, hold),
            faults,
            gap_expected=True,
            process_url=url,
            resubscribe_delay=delay,
            **bounds,
        )
        assert_passed(await run(scenario))
