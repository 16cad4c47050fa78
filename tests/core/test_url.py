"""Broadcast URLs: parsing, multi-host lists, and passwords that never leak."""

import pytest

from opal_broadcast import BackboneURL, Broadcast, HostPort, InvalidOption, InvalidURL, take_options

SENTINEL = "s3ntinel-P@ss/word"


def test_userinfo_is_percent_decoded():
    """ACL user and password come out decoded; the password is masked in str and repr."""
    url = BackboneURL.parse("redis://alice:p%40ss%3Aw0rd@localhost:6379/2?x=1")
    assert (url.username, url.password) == ("alice", "p@ss:w0rd")
    assert url.hosts == [HostPort("localhost", 6379)]
    assert url.path == "/2"
    assert url.options == {"x": "1"}
    assert str(url) == "redis://alice:***@localhost:6379/2?x=1"
    assert "p%40ss" not in repr(url)


def test_password_only_userinfo():
    """``redis://:password@host`` has no user and a password."""
    url = BackboneURL.parse("redis://:secret@h")
    assert (url.username, url.password) == (None, "secret")
    assert "secret" not in str(url)


def test_multi_host_netloc_is_split_with_ports():
    """Kafka-style and failover host lists, including IPv6 literals."""
    url = BackboneURL.parse("kafka://h1:9092,h2,[::1]:9094/prefix")
    assert url.hosts == [HostPort("h1", 9092), HostPort("h2", None), HostPort("::1", 9094)]


@pytest.mark.parametrize(
    "text",
    [
        "localhost:6379",
        "redis:/localhost",
        "://host",
        "1redis://host",
        "redis://h:port",
        "redis://h:70000",
    ],
)
def test_malformed_urls_are_typed_errors(text):
    """Missing ``://``, a bad scheme or a bad port raise InvalidURL (a ValueError too)."""
    with pytest.raises(InvalidURL):
        BackboneURL.parse(text)


def test_non_string_url_is_refused():
    with pytest.raises(InvalidURL, match="must be a str"):
        BackboneURL.parse(b"redis://h")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        f"redis://user:{SENTINEL}@host:1/0",
        "redis://user:s3ntinel-P%40ss%2Fword@host/0",
        f"postgres//user:{SENTINEL}@host/db",
        f"redis://user:{SENTINEL}@host:notaport/0",
    ],
)
def test_sentinel_password_never_rendered(text):
    """Neither a parsed URL nor an error about a malformed one shows any form of the password."""
    try:
        rendered = repr(BackboneURL.parse(text)) + str(BackboneURL.parse(text))
    except InvalidURL as exc:
        rendered = str(exc)
    for form in (SENTINEL, "s3ntinel-P%40ss%2Fword", "s3ntinel"):
        assert form not in rendered


def test_redact_masks_every_form_of_the_password():
    """Driver messages quoting the password, raw or encoded, are cleaned."""
    url = BackboneURL.parse("redis://u:a%2Fb@h")
    assert url.redact("auth a/b failed; a%2Fb") == "auth *** failed; ***"
    assert url.reveal() == "redis://u:a%2Fb@h"


def test_take_options_refuses_unknown_names_with_a_hint():
    """Plugins allow-list options: a misspelt one is an error naming the closest accepted name."""
    url = BackboneURL.parse("redis://h/0?ssl_ca_certs=/x&health_chek=1")
    with pytest.raises(InvalidOption, match="'health_chek' \\(did you mean 'health_check'\\?\\)"):
        take_options(url, ["ssl_ca_certs", "health_check"])
    merged = take_options(url, ["ssl_ca_certs", "health_chek"], {"ssl_ca_certs": "/y"})
    assert merged == {"ssl_ca_certs": "/y", "health_chek": "1"}


def test_secret_query_options_are_masked_too():
    """password=, sasl_plain_password=, token= values never render; other options do."""
    url = BackboneURL.parse(
        "kafka://h:9092?sasl_plain_password=Sentinel%2Fq1&security_protocol=SASL_SSL&token=T0k3n"
    )
    text = str(url) + repr(url)
    assert "Sentinel" not in text and "T0k3n" not in text
    assert "security_protocol=SASL_SSL" in text
    assert (
        url.redact("refused Sentinel/q1 and Sentinel%2Fq1 and T0k3n")
        == "refused *** and *** and ***"
    )


def test_split_options_takes_named_options_and_keeps_the_rest_as_written():
    url = BackboneURL.parse("postgres://u:p%40ss@h1,h2/db?publish_timeout=2&keepalives=1#frag")
    taken, rest = url.split_options(["publish_timeout", "probe_interval"])
    assert taken == {"publish_timeout": "2"}
    assert rest.reveal() == "postgres://u:p%40ss@h1,h2/db?keepalives=1#frag"
    assert rest.options == {"keepalives": "1"}
    assert rest.password == "p@ss"
    assert url.split_options(["absent"]) == ({}, url)
    assert (
        BackboneURL.parse("memory://x?probe_interval=1")
        .split_options(["probe_interval"])[1]
        .reveal()
        == "memory://x"
    )


@pytest.mark.parametrize(
    "query",
    [
        "publish_timeout=soon",
        "probe_interval=0",
        "reconnect_max_delay=inf",
        "max_queue=1.5",
        "max_queue_bytes=1e6",
        "max_queue_bytes=0",
        "max_queue_bytes=-5",
        "max_queue_bytes=١٢",
    ],
)
def test_bad_timings_in_the_url_are_typed_errors_naming_the_option(query):
    with pytest.raises(InvalidOption, match=query.split("=")[0]) as caught:
        Broadcast(f"redis://:hunter2@h/0?{query}")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "keyword",
    [
        {"publish_timeout": -1},
        {"max_queue": 0},
        {"probe_timeout": "5"},
        {"max_queue_bytes": 0},
        {"max_queue_bytes": 2.5},
        {"max_queue_bytes": True},
    ],
)
def test_bad_timing_keywords_are_typed_errors(keyword):
    with pytest.raises(InvalidOption, match=next(iter(keyword))):
        Broadcast("memory://tuned", **keyword)


@pytest.mark.anyio
async def test_the_plugin_never_sees_the_core_options():
    """memory:// refuses every query option, yet accepts a URL carrying the core's timings."""
    with pytest.raises(InvalidOption, match="bogus"):
        async with Broadcast("memory://tuned?bogus=1"):
            pass
    async with Broadcast("memory://tuned?publish_timeout=1&max_queue=5") as broadcast:
        assert broadcast.url == "memory://tuned"
        async with broadcast.subscribe("c") as subscriber:
            await broadcast.publish("c", "tuned")
            assert (await subscriber.get()).message == "tuned"


@pytest.mark.anyio
async def test_connect_timeout_in_a_url_is_left_to_the_plugin():
    """libpq has its own connect_timeout; in a URL it is the plugin's (memory:// has none)."""
    with pytest.raises(InvalidOption, match="connect_timeout"):
        async with Broadcast("memory://tuned?connect_timeout=1"):
            pass
