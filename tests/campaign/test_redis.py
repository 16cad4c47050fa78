"""The fault campaign on Redis: restarts, CLIENT KILL of each connection, a half-open link."""

import uuid

import pytest
import redis.asyncio

from tests.campaign.faults import killing, restarts, stalled_proxy, with_query
from tests.campaign.harness import RUNS, VARIANTS, Scenario, assert_passed, count, half_open, run
from tests.campaign.harness import scenario_name as name
from tests.services import close_redis_client, kill_redis_clients

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

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
def client_name() -> str:
    """This test's CLIENT SETNAME, so kills hit this test's connections only."""
    return f"campaign-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def url(redis_url, client_name) -> str:
    return with_query(redis_url, client_name=client_name)


def kill_named(redis_url: str, client_name: str, client_type: str):
    """CLIENT KILL every connection of type ``client_type`` named ``client_name``."""

    async def kill() -> int:
        admin = redis.asyncio.Redis.from_url(redis_url)
        try:
            clients = await admin.client_list(_type=client_type)
        finally:
            await close_redis_client(admin)
        killed = 0
        for client in clients:
            if client.get("name") == client_name:
                killed += await kill_redis_clients(redis_url, addr=client["addr"])
        return killed

    return kill


@pytest.mark.parametrize("delay", VARIANTS)
@pytest.mark.parametrize("scale", RUNS)
async def test_restarts(services, redis_url, url, delay, scale):
    """Redis stopped for a second and started again: a gap for every worker each time, and
    delivery resumes within 1 s of the server accepting connections again."""
    faults = count(20, scale)
    scenario = Scenario(
        name("redis", "restart", delay),
        url,
        OPTIONS,
        restarts(services, "redis", down=DOWN),
        faults,
        gap_expected=True,
        resume_bound=RESUME,
        process_url=url,
        resubscribe_delay=delay,
    )
    assert_passed(await run(scenario))


@pytest.mark.parametrize("delay", VARIANTS)
@pytest.mark.parametrize("scale", RUNS)
async def test_pubsub_connection_killed(redis_url, url, client_name, delay, scale):
    """CLIENT KILL of the pub/sub connection: a gap for every worker, resumed within 1 s."""
    faults = count(25, scale)
    scenario = Scenario(
        name("redis", "kill-pubsub", delay),
        url,
        OPTIONS,
        killing("CLIENT KILL pubsub", kill_named(redis_url, client_name, "pubsub")),
        faults,
        gap_expected=True,
        resume_bound=RESUME,
        process_url=url,
        resubscribe_delay=delay,
    )
    assert_passed(await run(scenario))


@pytest.mark.parametrize("delay", VARIANTS)
@pytest.mark.parametrize("scale", RUNS)
async def test_publishing_connection_killed(redis_url, url, client_name, delay, scale):
    """CLIENT KILL of the publishing connections (both processes'): subscribers lose nothing
    they were due, so it is no gap for anyone, and delivery goes on within 1 s."""
    faults = count(25, scale)
    scenario = Scenario(
        name("redis", "kill-publishing", delay),
        url,
        OPTIONS,
        killing("CLIENT KILL normal", kill_named(redis_url, client_name, "normal")),
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
    """This process reaches Redis through a proxy that black-holes both directions (no FIN, no
    RST); the other process publishes directly. A gap within probe_interval + probe_timeout + 1 s,
    publish fails typed within publish_timeout + 0.5 s, delivery resumes when traffic passes
    again (see harness.half_open for the bounds)."""
    hold, bounds = half_open(OPTIONS)
    faults = count(5, scale)
    async with tcp_proxy(url) as proxy:
        scenario = Scenario(
            name("redis", "half-open", delay),
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
