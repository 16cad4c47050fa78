"""URLs and options are checked before any I/O: allow-listed, typed, secrets kept out of errors."""

from pathlib import Path

import pytest

from opal_broadcast import BackboneURL, InvalidOption, InvalidURL
from opal_broadcast_redis._options import ENV_PASSWORD, ENV_USERNAME, RedisConfig

SECRET = "s3ntinel-P@ss"


def parse(url: str, environ: dict[str, str] | None = None, **options: object) -> RedisConfig:
    return RedisConfig.parse(BackboneURL.parse(url), options, environ or {})


def test_host_port_and_database_from_the_url():
    """redis://host:port/db gives redis-py's host, port and db; defaults are localhost:6379/0."""
    assert parse("redis://example.org:7000/3").connection_kwargs == {
        "host": "example.org",
        "port": 7000,
        "db": 3,
    }
    assert parse("redis://").connection_kwargs == {"host": "localhost", "port": 6379, "db": 0}


def test_ipv6_literal_host():
    """A bracketed IPv6 literal is a host like any other."""
    kwargs = parse("redis://[::1]:6380").connection_kwargs
    assert (kwargs["host"], kwargs["port"]) == ("::1", 6380)


def test_password_only_and_acl_user_are_percent_decoded():
    """redis://:pw@ logs in as the default user; redis://user:pw@ as an ACL user, both decoded."""
    only = parse("redis://:p%40ss%3Aw%2Frd@h")
    assert "username" not in only.connection_kwargs
    assert only.connection_kwargs["password"] == "p@ss:w/rd"
    acl = parse("redis://al%20ice:p%40ss@h")
    assert (acl.connection_kwargs["username"], acl.connection_kwargs["password"]) == (
        "al ice",
        "p@ss",
    )


def test_credentials_from_options_and_the_environment():
    """Keyword options, then OPAL_BROADCAST_REDIS_USERNAME/PASSWORD, fill what the URL omits."""
    from_options = parse("redis://h", username="opal", password=SECRET)
    assert from_options.connection_kwargs["username"] == "opal"
    assert from_options.connection_kwargs["password"] == SECRET
    env = {ENV_USERNAME: "envuser", ENV_PASSWORD: "envpass"}
    from_env = parse("redis://h", env)
    assert from_env.connection_kwargs["username"] == "envuser"
    assert from_env.connection_kwargs["password"] == "envpass"
    from_both = parse("redis://u:p@h", env).connection_kwargs  # the userinfo wins, no error
    assert (from_both["username"], from_both["password"]) == ("u", "p")
    with pytest.raises(InvalidOption, match="give it once"):
        parse("redis://u@h?username=other")


def test_two_different_passwords_are_refused_without_showing_either():
    """A password in the URL and a different password= option is ambiguous: an error."""
    with pytest.raises(InvalidOption, match="give it once") as caught:
        parse(f"redis://:{SECRET}@h", password="other-secret")
    assert SECRET not in str(caught.value)
    assert "other-secret" not in str(caught.value)
    with pytest.raises(InvalidOption, match="'password' must be a str") as caught:
        parse("redis://h", password=2024_1234)
    assert "20241234" not in str(caught.value)


def test_password_in_the_query_string_is_refused():
    """?password= is a secret in the query string: refused, naming the keyword and the env var."""
    with pytest.raises(InvalidOption, match="'password' is a secret") as caught:
        parse(f"redis://h?password={SECRET}")
    assert SECRET not in str(caught.value)
    assert ENV_PASSWORD in str(caught.value)


def test_unknown_option_names_the_closest_accepted_one():
    """A misspelt option is an error with a suggestion, from the query string or a keyword."""
    with pytest.raises(InvalidOption, match="did you mean 'ssl_ca_certs'"):
        parse("rediss://h?ssl_ca_cert=/x")
    with pytest.raises(InvalidOption, match="'health_check_interval'"):
        parse("redis://h", health_check_interval=5)


def test_tls_options_need_rediss():
    """ssl_* on a plain redis:// URL is a mistake, not something to ignore."""
    with pytest.raises(InvalidOption, match="rediss://"):
        parse("redis://h?ssl_check_hostname=false")


def test_tls_verifies_by_default_and_checks_files_exist(tmp_path: Path):
    """rediss:// requires a verified certificate and a matching host name unless told otherwise."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until connect")
    config = parse(f"rediss://h:6380?ssl_ca_certs={ca}")
    assert config.tls
    assert config.connection_kwargs["ssl_cert_reqs"] == "required"
    assert config.connection_kwargs["ssl_check_hostname"] is True
    assert config.connection_kwargs["ssl_ca_certs"] == str(ca)
    relaxed = parse("rediss://h", ssl_check_hostname="false")
    assert relaxed.connection_kwargs["ssl_check_hostname"] is False
    with pytest.raises(InvalidOption, match="'ssl_ca_certs' must be the path of an existing file"):
        parse(f"rediss://h?ssl_ca_certs={tmp_path / 'missing.pem'}")
    with pytest.raises(
        InvalidOption, match="'ssl_ca_certs' must be the path of an existing file, not PosixPath"
    ):
        parse("rediss://h", ssl_ca_certs=tmp_path)
    assert parse("rediss://h?ssl_cert_reqs=NONE").connection_kwargs["ssl_cert_reqs"] == "none"
    with pytest.raises(InvalidOption, match="'ssl_cert_reqs' must be one of required"):
        parse("rediss://h?ssl_cert_reqs=maybe")
    with pytest.raises(InvalidOption, match="ssl_certfile"):
        parse(f"rediss://h?ssl_keyfile={ca}")


def test_database_from_path_or_option_but_not_two_different_ones():
    """db= works without a path; a path and a different db= is refused; a bad number too."""
    assert parse("redis://h?db=5").connection_kwargs["db"] == 5
    assert parse("redis://h/5", db=5).connection_kwargs["db"] == 5
    with pytest.raises(InvalidOption, match="give it once"):
        parse("redis://h/1?db=2")
    with pytest.raises(InvalidURL, match="database number"):
        parse("redis://h/zero")
    with pytest.raises(InvalidOption, match="'db' must be a whole number >= 0"):
        parse("redis://h?db=-1")


def test_unix_socket_urls():
    """unix:///path names a socket; a host in a unix:// URL is refused; db= selects a database."""
    config = parse("unix:///run/redis/redis.sock?db=2")
    assert config.unix
    assert config.connection_kwargs == {"path": "/run/redis/redis.sock", "db": 2}
    with pytest.raises(InvalidURL, match="three slashes"):
        parse("unix://localhost/run/redis.sock")
    with pytest.raises(InvalidURL, match="socket path"):
        parse("unix://")


def test_several_hosts_are_refused():
    """Sentinel and Cluster are not served: a host list is an error, not the first host."""
    with pytest.raises(InvalidURL, match="several hosts"):
        parse("redis://a:6379,b:6379")


def test_decode_messages_is_a_boolean_option():
    """decode_messages defaults to true; false delivers bytes; a non-boolean is refused."""
    assert parse("redis://h").decode_messages is True
    assert parse("redis://h?decode_messages=false").decode_messages is False
    with pytest.raises(InvalidOption, match="'decode_messages' must be true or false"):
        parse("redis://h", decode_messages="sometimes")


def test_config_repr_and_redact_hide_every_password_source():
    """The config's repr and redact() mask the password from the URL, an option or the env."""
    for config in (
        parse(f"redis://:{SECRET}@h"),
        parse("redis://h", password=SECRET),
        parse("redis://h", {ENV_PASSWORD: SECRET}),
    ):
        assert SECRET not in repr(config)
        assert config.redact(f"error mentioning {SECRET}") == "error mentioning ***"


def test_client_name_is_checked_before_connecting():
    """CLIENT SETNAME refuses spaces: the option is refused up front instead of mid-handshake."""
    assert parse("redis://h?client_name=opal-server-1").connection_kwargs["client_name"] == (
        "opal-server-1"
    )
    with pytest.raises(InvalidOption, match="printable ASCII"):
        parse("redis://h", client_name="opal server")
