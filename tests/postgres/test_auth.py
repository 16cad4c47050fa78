"""Logins: password, TLS (verified), client certificates; refused credentials never echo the secret."""

from __future__ import annotations

import logging
import traceback
import uuid
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest

from opal_broadcast import (
    AuthenticationFailed,
    BackboneUnavailable,
    Broadcast,
    ConfigurationError,
    Event,
)
from tests.postgres.conftest import with_query

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

SENTINEL = "S3ntinel-pw-do-not-echo"


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.netloc.split("@")[0].split(":")[0]
    host = parts.netloc.split("@")[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def _everything_said(exc: BaseException, caplog: pytest.LogCaptureFixture) -> str:
    """Every text the failure produced: message, repr, traceback with causes, log records."""
    return "\n".join(
        [
            str(exc),
            repr(exc),
            "".join(traceback.format_exception(exc)),
            *(record.getMessage() for record in caplog.records),
        ]
    )


async def _session(admin_url: str, application_name: str) -> asyncpg.Record | None:
    connection = await asyncpg.connect(admin_url)
    try:
        return await connection.fetchrow(
            "SELECT a.usename, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
            "WHERE a.application_name = $1",
            application_name,
        )
    finally:
        await connection.close()


async def test_password_login_works(postgres_password_url, app_name, channel):
    """Role opal_pw with its password (scram-sha-256) publishes and subscribes."""
    url = with_query(postgres_password_url, application_name=app_name)
    async with Broadcast(url) as broadcast, broadcast.subscribe(channel) as subscriber:
        await broadcast.publish(channel, "with password")
        with anyio.fail_after(10):
            assert await subscriber.get() == Event(channel, "with password")
        assert "opal-pw-secret" not in broadcast.url
        assert "opal-pw-secret" not in repr(broadcast)


async def test_wrong_password_is_authentication_failed_without_the_secret(
    postgres_password_url, caplog
):
    """A refused password is AuthenticationFailed; the secret appears nowhere, not even in logs."""
    caplog.set_level(logging.DEBUG)
    url = _with_password(postgres_password_url, SENTINEL)
    with pytest.raises(AuthenticationFailed) as caught:
        await Broadcast(url, connect_timeout=5).connect()
    said = _everything_said(caught.value, caplog)
    assert "opal_pw" in str(caught.value)
    assert "password authentication failed" in str(caught.value)
    assert SENTINEL not in said


async def test_missing_password_is_authentication_failed(postgres_password_url):
    """No password for a role that needs one: AuthenticationFailed (not a hang, not a crash)."""
    url = postgres_password_url.replace(":opal-pw-secret@", "@")
    assert "opal-pw-secret" not in url
    with pytest.raises(AuthenticationFailed):
        await Broadcast(url, connect_timeout=5).connect()


async def test_unknown_role_is_authentication_failed(postgres_url):
    """A role the server does not know is refused as a login."""
    url = postgres_url.replace("//opal@", f"//nobody_{uuid.uuid4().hex[:6]}@")
    with pytest.raises(AuthenticationFailed, match="does not exist"):
        await Broadcast(url, connect_timeout=5).connect()


async def test_unknown_database_is_a_configuration_error(postgres_url):
    """A database that does not exist is a configuration error naming the fix."""
    url = postgres_url.rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(ConfigurationError, match="database name"):
        await Broadcast(url, connect_timeout=5).connect()


async def test_tls_login_verifies_the_server_and_uses_tls(
    postgres_tls_url, postgres_admin_url, app_name, channel
):
    """sslmode=verify-full with the test CA: works, and the session really is encrypted."""
    url = with_query(postgres_tls_url, application_name=app_name)
    async with Broadcast(url) as broadcast, broadcast.subscribe(channel) as subscriber:
        await broadcast.publish(channel, "over tls")
        with anyio.fail_after(10):
            assert await subscriber.get() == Event(channel, "over tls")
        session = await _session(postgres_admin_url, f"{app_name}/listen")
    assert session is not None
    assert session["usename"] == "opal_tls"
    assert session["ssl"] is True


async def test_client_certificate_login(
    postgres_url, postgres_admin_url, test_ca, app_name, channel
):
    """Role opal_cert logs in with sslcert/sslkey (pg_hba 'cert'), verified against the CA."""
    base = postgres_url.replace("//opal@", "//opal_cert@")
    url = with_query(
        base,
        sslmode="verify-full",
        sslrootcert=test_ca.ca_file,
        sslcert=test_ca.client_cert,
        sslkey=test_ca.client_key,
        application_name=app_name,
    )
    async with Broadcast(url) as broadcast, broadcast.subscribe(channel) as subscriber:
        await broadcast.publish(channel, "cert")
        with anyio.fail_after(10):
            assert (await subscriber.get()).message == "cert"
        session = await _session(postgres_admin_url, f"{app_name}/listen")
    assert session is not None and session["usename"] == "opal_cert"


async def test_tls_only_role_without_tls_is_refused(postgres_tls_url):
    """sslmode=disable for a role pg_hba admits over TLS only: AuthenticationFailed."""
    url = postgres_tls_url.split("?")[0] + "?sslmode=disable"
    with pytest.raises(AuthenticationFailed, match="no encryption"):
        await Broadcast(url, connect_timeout=5).connect()


async def test_server_certificate_from_another_ca_is_refused(postgres_tls_url, test_ca):
    """verify-full against a file that is not the server's CA fails with a TLS hint."""
    url = postgres_tls_url.split("?")[0] + f"?sslmode=verify-full&sslrootcert={test_ca.client_cert}"
    with pytest.raises(BackboneUnavailable, match="sslrootcert"):
        await Broadcast(url, connect_timeout=5).connect()


async def test_unreachable_server_fails_fast_and_typed(postgres_url):
    """Nothing listening on the port: BackboneUnavailable well within the connect timeout."""
    url = postgres_url.replace(":25432/", ":1/")
    with anyio.fail_after(5), pytest.raises(BackboneUnavailable, match="Could not connect"):
        await Broadcast(url, connect_timeout=5).connect()
