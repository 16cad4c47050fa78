"""The Redis backbone passes the conformance suite: plain, ACL user over a proxy, and TLS.

Each on asyncio's own event loop and on uvloop: uvicorn runs OPAL on uvloop when it is installed,
and the plugin takes over redis-py's transport, which differs between the two.
"""

import uuid
from collections.abc import Callable

import pytest

from opal_broadcast.testing import AccessControlConformance, BackboneConformance
from tests.redis.conftest import ServerRestart
from tests.services import TcpProxy
from tests.services.conformance import ThroughProxy

pytestmark = pytest.mark.redis


@pytest.fixture(params=["asyncio", ("asyncio", {"use_uvloop": True})], ids=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param


class TestRedisConformance(BackboneConformance):
    """redis:// without auth; the outage is a real stop and start of the server."""

    @pytest.fixture
    def backbone_url(self, redis_url: str) -> str:
        return redis_url

    @pytest.fixture
    def outage(self, server_restart: ServerRestart) -> ServerRestart:
        return server_restart


class _ThroughProxy(ThroughProxy):
    """The suite through a TCP proxy in front of ``upstream_url`` (given by subclasses)."""

    @pytest.fixture
    async def proxy(self, proxy_to: Callable[[str], TcpProxy], upstream_url: str) -> TcpProxy:
        proxy = proxy_to(upstream_url)
        await proxy.start()
        return proxy


class TestRedisAclConformance(_ThroughProxy):
    """redis://user:password@ (an ACL user) through a TCP proxy that can cut every connection."""

    @pytest.fixture
    def upstream_url(self, redis_acl_url: str) -> str:
        return redis_acl_url


class TestRedisTlsConformance(_ThroughProxy):
    """rediss:// verified against the test CA, through a TCP proxy that can cut every connection."""

    @pytest.fixture
    def upstream_url(self, rediss_url: str) -> str:
        return rediss_url


class TestRedisAccessControl(AccessControlConformance):
    """An ACL user allowed channels ``allowed-*`` only: others are AccessDenied."""

    @pytest.fixture
    def broadcast_options(self) -> dict[str, float]:
        return {"publish_timeout": 3.0, "connect_timeout": 5.0}

    @pytest.fixture
    def restricted(self, redis_limited_url: str) -> tuple[str, str, str]:
        suffix = uuid.uuid4().hex[:8]
        return redis_limited_url, f"allowed-{suffix}", f"denied-{suffix}"
