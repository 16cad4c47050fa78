"""Logins against the real password/ACL server: every way in works, every refusal is typed and masked."""

import logging
import traceback
import uuid
from urllib.parse import quote

import anyio
import pytest
import redis.asyncio as aioredis

from opal_broadcast import AccessDenied, AuthenticationFailed, BackboneURL, Broadcast, Event
from opal_broadcast_redis._options import ENV_PASSWORD, ENV_USERNAME
from tests.services import close_redis_client as close

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

WRONG = "wr0ng-s3ntinel-secret"


async def round_trip(url: str, **options: object) -> Event:
    channel = f"auth-{uuid.uuid4().hex[:8]}"
    async with Broadcast(url, connect_timeout=5, **options) as broadcast:
        async with broadcast.subscribe(channel) as subscriber:
            await broadcast.publish(channel, "in")
            with anyio.fail_after(5):
                return await subscriber.get()


def auth_server(url: str) -> str:
    """The auth instance's address without credentials."""
    return f"redis://{BackboneURL.parse(url).hostlist}/0"


def assert_secret_absent(error: BaseException, caplog: pytest.LogCaptureFixture, secret: str):
    """The secret is in no message, no chained cause, no traceback and no log record."""
    text = "".join(traceback.format_exception(error))
    assert secret not in text
    assert all(secret not in record.getMessage() for record in caplog.records)


async def test_password_only_login(redis_password_url):
    """redis://:password@ logs in as the default user."""
    assert (await round_trip(redis_password_url)).message == "in"


async def test_acl_user_login(redis_acl_url):
    """redis://user:password@ logs in as an ACL user."""
    assert (await round_trip(redis_acl_url)).message == "in"


async def test_percent_encoded_credentials_reach_the_server_decoded(redis_acl_url):
    """A user and password full of URL-special characters work once percent-encoded."""
    user = f"opal@pct:{uuid.uuid4().hex[:6]}"  # no spaces: Redis refuses them in user names
    password = "p@ss:w/rd%?#€ x"
    admin = aioredis.Redis.from_url(redis_acl_url)
    try:
        await admin.acl_setuser(
            user,
            enabled=True,
            passwords=[f"+{password}"],
            commands=["+@all"],
            keys=["*"],
            channels=["*"],
        )
        url = f"redis://{quote(user, safe='')}:{quote(password, safe='')}@{BackboneURL.parse(redis_acl_url).hostlist}/0"
        assert (await round_trip(url)).message == "in"
    finally:
        await admin.acl_deluser(user)
        await close(admin)


async def test_credentials_from_keyword_options(redis_acl_url):
    """username=/password= keyword options keep the secret out of the URL."""
    parsed = BackboneURL.parse(redis_acl_url)
    event = await round_trip(
        auth_server(redis_acl_url), username=parsed.username, password=parsed.password
    )
    assert event.message == "in"


async def test_credentials_from_the_environment(redis_acl_url, monkeypatch):
    """OPAL_BROADCAST_REDIS_USERNAME/PASSWORD are read at connect time."""
    parsed = BackboneURL.parse(redis_acl_url)
    assert parsed.username is not None and parsed.password is not None
    monkeypatch.setenv(ENV_USERNAME, parsed.username)
    monkeypatch.setenv(ENV_PASSWORD, parsed.password)
    assert (await round_trip(auth_server(redis_acl_url))).message == "in"


async def test_wrong_password_is_typed_and_never_echoed(redis_acl_url, caplog):
    """A wrong ACL password: AuthenticationFailed naming the user, the secret nowhere."""
    caplog.set_level(logging.DEBUG)
    parsed = BackboneURL.parse(redis_acl_url)
    url = f"redis://{parsed.username}:{WRONG}@{parsed.hostlist}/0"
    with anyio.fail_after(10), pytest.raises(AuthenticationFailed) as caught:
        await round_trip(url)
    assert f"user {parsed.username!r}" in str(caught.value)
    assert "***" in str(caught.value)
    assert_secret_absent(caught.value, caplog, WRONG)


async def test_wrong_password_from_an_option_is_never_echoed(redis_password_url, caplog):
    """The same for a password given as a keyword option (not part of the URL)."""
    caplog.set_level(logging.DEBUG)
    with anyio.fail_after(10), pytest.raises(AuthenticationFailed) as caught:
        await round_trip(auth_server(redis_password_url), password=WRONG)
    assert_secret_absent(caught.value, caplog, WRONG)


async def test_missing_password_is_authentication_failed(redis_password_url):
    """A server that requires a password and gets none: AuthenticationFailed (NOAUTH), not a hang."""
    with anyio.fail_after(10), pytest.raises(AuthenticationFailed, match="NOAUTH"):
        await round_trip(auth_server(redis_password_url))


async def test_acl_channel_permissions_are_typed_errors(redis_limited_url):
    """A user allowed only some channels: NOPERM on others is AccessDenied (the login was fine,
    the channel is not), with Redis's own reason; allowed ones work on the same connection."""
    async with Broadcast(redis_limited_url, connect_timeout=5) as broadcast:
        with pytest.raises(AccessDenied, match="NOPERM"):
            await broadcast.publish("forbidden", "x")
        with pytest.raises(AccessDenied, match="NOPERM"):
            async with broadcast.subscribe("forbidden"):
                pass
        async with broadcast.subscribe("allowed-1") as subscriber:
            await broadcast.publish("allowed-1", "ok")
            with anyio.fail_after(5):
                assert (await subscriber.get()).message == "ok"


async def test_password_over_tls(rediss_password_url):
    """rediss://:PASSWORD@host, the form OPAL deployments on managed Redis use, round-trips."""
    assert (await round_trip(rediss_password_url)).message == "in"


async def test_wrong_password_over_tls_is_typed_and_never_echoed(rediss_password_url, caplog):
    """Over TLS too, a refused password is AuthenticationFailed with the secret nowhere."""
    caplog.set_level(logging.DEBUG)
    parsed = BackboneURL.parse(rediss_password_url)
    url = parsed.reveal().replace(f":{parsed.password}@", f":{WRONG}@")
    with anyio.fail_after(10), pytest.raises(AuthenticationFailed) as caught:
        await round_trip(url)
    assert_secret_absent(caught.value, caplog, WRONG)
