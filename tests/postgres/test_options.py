"""URL forms and options: asyncpg's keys passed through, libpq's keepalive applied, the rest refused."""

from __future__ import annotations

import socket

import anyio
import asyncpg
import pytest

from opal_broadcast import BackboneURL, Broadcast, Event, InvalidOption, InvalidURL
from opal_broadcast_postgres import DEFAULT_POOL_SIZE, POOL_SIZE_ENV
from opal_broadcast_postgres._connect import open_connection
from opal_broadcast_postgres._fences.transport import client_socket
from opal_broadcast_postgres._options import PostgresConfig
from tests.postgres.conftest import with_query
from tests.services._state import service_dir

pytestmark = pytest.mark.anyio


def _parse(url: str, environ: dict[str, str] | None = None, **options: object) -> PostgresConfig:
    return PostgresConfig.parse(BackboneURL.parse(url), options, environ or {})


def test_dsn_keeps_hosts_and_database_but_not_credentials():
    """The DSN handed to asyncpg carries hosts, database and asyncpg's keys; never the password."""
    config = _parse("postgres://u:p%40ss@h1:5432,h2:5433/db?sslmode=require&keepalives_idle=7")
    assert config.dsn == "postgresql://h1:5432,h2:5433/db?sslmode=require"
    assert (config.user, config.password) == ("u", "p@ss")
    assert config.keepalive.idle == 7
    assert "p@ss" not in repr(config)


def test_unknown_option_is_refused_with_a_suggestion():
    """A misspelt option names the closest accepted one instead of reaching the server."""
    with pytest.raises(InvalidOption, match="did you mean 'keepalives_idle'"):
        _parse("postgres://h/db?keepalive_idle=5")
    with pytest.raises(InvalidOption, match="'statement_timeout'"):
        _parse("postgres://h/db", statement_timeout="5s")


@pytest.mark.parametrize("name", ["password", "sslpassword"])
def test_secrets_in_the_query_string_are_refused_without_echoing_them(name):
    """A password in the query string would not be masked: refused, and not repeated."""
    with pytest.raises(InvalidOption, match=name) as caught:
        _parse(f"postgres://u@h/db?{name}=hunter2-secret")
    assert "hunter2-secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ("sslmode=sometimes", "'sslmode' must be one of disable, allow, prefer, require"),
        ("target_session_attrs=primary-ish", "'target_session_attrs' must be one of any, "),
        ("keepalives=2", "'keepalives' must be a whole number from 0 to 1"),
        ("keepalives_idle=soon", "'keepalives_idle' must be a whole number >= 1"),
        ("keepalives_count=0", "'keepalives_count' must be a whole number >= 1"),
        ("pool_size=0", "'pool_size' must be a whole number from 1 to 100"),
        ("max_message_size=100", "'max_message_size' must be a whole number from 8000 to "),
        ("connect_timeout=-1", "'connect_timeout' must be a duration in seconds >= 0.001"),
        ("ssl=true", "'ssl' is only a keyword option"),
        ("server_settings=x", "'server_settings' is only a keyword option"),
    ],
)
def test_bad_option_values_are_refused(query, match):
    """Every option value is checked before any I/O, naming the option and what it expects."""
    with pytest.raises(InvalidOption, match=match):
        _parse(f"postgres://h/db?{query}")


def test_fragment_is_refused():
    """A '#' in the URL is a mistake (often an unencoded '#' in a password)."""
    with pytest.raises(InvalidURL):
        _parse("postgres://h/db#frag")


def test_pool_size_comes_from_the_option_then_the_broadcaster_variable():
    """pool_size=... wins; else BROADCASTER_PG_MAX_POOL_SIZE; else the default."""
    assert _parse("postgres://h/db").pool_size == DEFAULT_POOL_SIZE
    assert _parse("postgres://h/db", {POOL_SIZE_ENV: "7"}).pool_size == 7
    assert _parse("postgres://h/db?pool_size=2", {POOL_SIZE_ENV: "7"}).pool_size == 2
    assert _parse("postgres://h/db", {POOL_SIZE_ENV: "7"}, pool_size=3).pool_size == 3
    with pytest.raises(InvalidOption, match=POOL_SIZE_ENV):
        _parse("postgres://h/db", {POOL_SIZE_ENV: "many"})


def test_keyword_options_are_checked_too():
    """Keywords are typed: asyncpg's keys become DSN text, server_settings must map str to str."""
    config = _parse("postgres://h/db", port=5433, server_settings={"application_name": "opal"})
    assert config.dsn == "postgresql://h/db?port=5433"
    assert (config.application_name, config.server_settings) == ("opal", {})
    with pytest.raises(InvalidOption, match="'server_settings' must be a dict of str to str"):
        _parse("postgres://h/db", server_settings={"statement_timeout": 5})
    with pytest.raises(InvalidOption, match="'connect_timeout' must be a duration"):
        _parse("postgres://h/db", connect_timeout="soon")


def test_keyword_options_win_over_the_query_string():
    """Broadcast(url, max_message_size=...) overrides ?max_message_size=..."""
    config = _parse("postgres://h/db?max_message_size=9000", max_message_size=20000)
    assert config.max_message_size == 20000


@pytest.mark.postgres
async def test_libpq_keepalive_options_are_applied_to_the_socket(postgres_url):
    """keepalives* are set on the socket (asyncpg alone would send them to the server and fail)."""
    url = with_query(
        postgres_url, keepalives=1, keepalives_idle=11, keepalives_interval=4, keepalives_count=2
    )
    with pytest.raises(asyncpg.UndefinedObjectError):
        await asyncpg.connect(url)  # what the plugin saves its users from
    config = _parse(url)
    connection = await open_connection(config, "listen")
    try:
        sock = client_socket(connection)
        assert sock is not None
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 11
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 4
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 2
    finally:
        await connection.close()


@pytest.mark.postgres
async def test_opal_style_url_with_libpq_options_works_end_to_end(postgres_url, channel):
    """A URL as OPAL users write it (keepalives, connect_timeout, sslmode) publishes and receives."""
    url = with_query(
        postgres_url,
        sslmode="prefer",
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
        connect_timeout=5,
        target_session_attrs="read-write",
    )
    async with Broadcast(url) as broadcast, broadcast.subscribe(channel) as subscriber:
        await broadcast.publish(channel, "opal")
        with anyio.fail_after(10):
            assert await subscriber.get() == Event(channel, "opal")


@pytest.mark.postgres
async def test_multi_host_url_fails_over_to_the_host_that_answers(postgres_url, channel):
    """postgres://u@dead:1,live:25432/db: the first host refuses, the second serves."""
    url = postgres_url.replace("@127.0.0.1:25432/", "@127.0.0.1:1,127.0.0.1:25432/")
    assert "127.0.0.1:1," in url
    async with Broadcast(url) as broadcast, broadcast.subscribe(channel) as subscriber:
        await broadcast.publish(channel, "failover")
        with anyio.fail_after(10):
            assert (await subscriber.get()).message == "failover"


@pytest.mark.postgres
async def test_sessions_are_named_and_closed_on_disconnect(
    pg_url, postgres_admin_url, app_name, channel
):
    """The sessions show as '<application_name>/listen' and '/publish'; disconnect closes both."""

    async def names() -> list[str]:
        connection = await asyncpg.connect(postgres_admin_url)
        try:
            rows = await connection.fetch(
                "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE $1",
                f"{app_name}/%",
            )
        finally:
            await connection.close()
        return sorted(row[0] for row in rows)

    async with Broadcast(pg_url) as broadcast, broadcast.subscribe(channel):
        await broadcast.publish(channel, "x")
        assert await names() == [f"{app_name}/listen", f"{app_name}/publish"]
    with anyio.fail_after(5):
        while await names():
            await anyio.sleep(0.05)


@pytest.mark.postgres
async def test_unix_socket_url_works(postgres_url, channel):  # postgres_url: the server runs
    """postgres://user@/db?host=<socket dir>: the asyncpg/libpq form for a local socket."""
    socket_dir = service_dir("postgres") / "run"
    url = with_query("postgresql://opal@/opal", host=socket_dir, port=25432)
    async with Broadcast(url) as broadcast, broadcast.subscribe(channel) as subscriber:
        await broadcast.publish(channel, "local")
        with anyio.fail_after(10):
            assert await subscriber.get() == Event(channel, "local")
