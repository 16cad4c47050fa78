"""URLs, options, KAFKA_* variables and channel names, checked before any I/O (no broker needed)."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest

from opal_broadcast import BackboneURL, Broadcast, InvalidChannel, InvalidOption, InvalidURL
from opal_broadcast_kafka._messages import record_size
from opal_broadcast_kafka._options import KafkaConfig
from opal_broadcast_kafka._topics import TopicNames

pytestmark = pytest.mark.anyio

SECRET = "s3cr3t-sentinel"


def parse(url: str, environ: dict[str, str] | None = None, **options: Any):
    return KafkaConfig.parse(BackboneURL.parse(url), options, environ or {})


def test_the_entry_point_module_imports_no_driver():
    """Discovery stays cheap and safe: loading the hooks module does not import aiokafka."""
    code = "import sys, opal_broadcast_kafka.plugin; print('aiokafka' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_several_bootstrap_servers_and_default_ports():
    """A multi-host netloc (which urllib cannot read) becomes aiokafka's server list."""
    config = parse("kafka://k1:9093,k2,[::1]:9094,10.0.0.5")
    assert config.bootstrap_servers == ["k1:9093", "k2:9092", "[::1]:9094", "10.0.0.5:9092"]
    assert parse("kafka://").bootstrap_servers == ["localhost:9092"]


def test_defaults_are_a_plaintext_broadcast_channel():
    """No prefix (the channel is the topic, as with broadcaster), acks=all, short fetch waits."""
    config = parse("kafka://k1")
    assert config.topic_prefix == ""
    assert config.security_protocol == "PLAINTEXT"
    assert config.acks == "all"
    assert config.fetch_max_wait_ms == 100
    assert config.partitions == 1
    assert config.replication_factor is None


def test_options_from_the_query_string_and_keywords():
    """Query options are parsed from text; keyword options win over them."""
    config = parse(
        "kafka://k1?topic_prefix=opal.&partitions=3&acks=1&fetch_max_wait_ms=20", partitions=6
    )
    assert (config.topic_prefix, config.partitions, config.acks) == ("opal.", 6, 1)
    assert config.fetch_max_wait_ms == 20


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("kafka://k1?partitons=3", {}),
        ("kafka://k1?partitions=0", {}),
        ("kafka://k1?partitions=two", {}),
        ("kafka://k1", {"partitions": True}),
        ("kafka://k1?acks=0", {}),
        ("kafka://k1?security_protocol=TLS", {}),
        (
            "kafka://k1?sasl_mechanism=GSSAPI&security_protocol=SASL_SSL",
            {"username": "u", "password": "p"},
        ),
        ("kafka://k1?topic_prefix=bad/prefix", {}),
        ("kafka://k1?fetch_max_wait_ms=6000", {}),
        ("kafka://k1?security_protocol=SASL_PLAINTEXT", {}),
        ("kafka://k1", {"client_id": 3}),
    ],
)
def test_bad_options_are_refused(url: str, options: dict[str, Any]):
    """Misspelt, out-of-range and inconsistent options are InvalidOption, naming the option."""
    with pytest.raises(InvalidOption):
        parse(url, **options)


def test_a_path_is_refused():
    """kafka:// URLs have no path (a topic prefix is an option)."""
    with pytest.raises(InvalidURL, match="path"):
        parse("kafka://k1/topics")


def test_a_password_in_the_query_string_is_accepted_and_masked():
    """password= and ssl_key_password= may be query options: the URL masks their values."""
    url = "kafka://opal@k1?security_protocol=SASL_SSL&password=pw-sentinel&ssl_key_password=key-sentinel"
    config = parse(url)
    assert (config.password, config.ssl_key_password) == ("pw-sentinel", "key-sentinel")
    shown = f"{BackboneURL.parse(url)} {config!r}"
    assert "pw-sentinel" not in shown
    assert "key-sentinel" not in shown


def test_credentials_in_the_userinfo_select_sasl():
    """kafka://user:password@host means SASL (PLAIN unless sasl_mechanism says otherwise)."""
    config = parse("kafka://opal:pw%2Fx@k1?sasl_mechanism=scram-sha-512")
    assert (config.username, config.password) == ("opal", "pw/x")
    assert config.security_protocol == "SASL_PLAINTEXT"
    assert config.sasl_mechanism == "SCRAM-SHA-512"
    tls = parse("kafka://opal:pw@k1", ssl_cafile="/ca.pem")
    assert tls.security_protocol == "SASL_SSL"
    assert parse("kafka://k1", ssl_cafile="/ca.pem").security_protocol == "SSL"


def test_the_environment_variables_of_opal_deployments_are_honoured():
    """KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_PLAIN_*, KAFKA_SSL_* as broadcaster."""
    environ = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "KAFKA_PLAIN_USERNAME": "env-user",
        "KAFKA_PLAIN_PASSWORD": SECRET,
        "KAFKA_SSL_CAFILE": "/ca.pem",
        "KAFKA_SSL_CERTFILE": "/client.pem",
        "KAFKA_SSL_KEYFILE": "/client.key",
        "KAFKA_SSL_KEY_PASSWORD": "key-secret",
    }
    config = parse("kafka://k1", environ)
    assert config.security_protocol == "SASL_SSL"
    assert config.sasl_mechanism == "SCRAM-SHA-256"
    assert (config.username, config.password) == ("env-user", SECRET)
    assert (config.ssl_cafile, config.ssl_certfile, config.ssl_keyfile) == (
        "/ca.pem",
        "/client.pem",
        "/client.key",
    )
    assert config.ssl_key_password == "key-secret"
    assert SECRET not in repr(config)
    assert "key-secret" not in repr(config)
    assert config.redact(f"oops {SECRET} and key-secret") == "oops *** and ***"


def test_the_url_and_keywords_win_over_the_environment():
    """Precedence: keyword > URL > environment > default."""
    environ = {"KAFKA_PLAIN_USERNAME": "env", "KAFKA_PLAIN_PASSWORD": "env-pw"}
    environ["KAFKA_SECURITY_PROTOCOL"] = "SASL_PLAINTEXT"
    assert parse("kafka://url:url-pw@k1", environ).username == "url"
    assert parse("kafka://url:url-pw@k1", environ, username="kw").username == "kw"
    assert parse("kafka://k1", environ).password == "env-pw"


def test_the_query_string_wins_over_the_userinfo():
    """username=/password= in the query string beat the userinfo; a keyword beats both."""
    config = parse("kafka://info:info-pw@k1?username=query&password=query-pw")
    assert (config.username, config.password) == ("query", "query-pw")
    assert parse("kafka://info:info-pw@k1?password=query-pw", password="kw").password == "kw"


@pytest.mark.parametrize("name", ["password", "ssl_key_password"])
def test_a_bad_secret_is_refused_without_showing_it(name: str):
    """A secret that is not a str is an InvalidOption naming the option, not the value."""
    with pytest.raises(InvalidOption, match=name) as caught:
        parse("kafka://k1", **{name: SECRET.encode()})
    assert SECRET not in str(caught.value)


def test_a_bad_environment_value_names_its_variable():
    """The error says where the value came from, so the deployment can be fixed."""
    with pytest.raises(InvalidOption, match="KAFKA_SECURITY_PROTOCOL"):
        parse("kafka://k1", {"KAFKA_SECURITY_PROTOCOL": "TLS"})


def test_environment_credentials_alone_keep_plaintext_as_broadcaster_did(
    caplog: pytest.LogCaptureFixture,
):
    """Without KAFKA_SECURITY_PROTOCOL the credentials are unused, with a warning (no secret)."""
    environ = {"KAFKA_PLAIN_USERNAME": "env", "KAFKA_PLAIN_PASSWORD": SECRET}
    with caplog.at_level(logging.WARNING, logger="opal_broadcast.kafka"):
        config = parse("kafka://k1", environ)
    assert config.security_protocol == "PLAINTEXT"
    assert config.client_options()["sasl_plain_password"] is None
    assert "not used" in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    "channel",
    ["a b", "a/b", "chan:1", "é", "tab\t", "x" * 250, ".", "..", "__consumer_offsets", ""],
)
def test_channels_that_are_not_topic_names_are_refused(channel: str):
    """Illegal characters, over 249 characters, '.', '..', internal topics: InvalidChannel."""
    with pytest.raises(InvalidChannel):
        TopicNames("").topic(channel)


def test_the_prefix_counts_toward_the_topic_length():
    """249 characters in all: a prefix leaves that much less for the channel."""
    names = TopicNames("opal.")
    assert names.topic("EventNotifier") == "opal.EventNotifier"
    assert names.topic("x" * 244) == "opal." + "x" * 244
    with pytest.raises(InvalidChannel, match="249"):
        names.topic("x" * 245)


async def test_bad_options_fail_before_any_io():
    """Nothing listens on port 1: the error can only come from the checks, not a connection."""
    with pytest.raises(InvalidOption, match="partitions"):
        await Broadcast("kafka://127.0.0.1:1?partitions=-1", connect_timeout=2).connect()


@pytest.mark.parametrize("size", [0, 1, 63, 64, 8191, 8192, 1048000, 2 << 20])
@pytest.mark.parametrize(
    "headers", [None, [("opal-broadcast-bytes", b"")], [("k" * 70, b"v" * 200)]]
)
def test_the_record_size_is_the_one_aiokafkas_producer_checks(size: int, headers: Any):
    """publish() refuses what aiokafka's producer would, before the topic is even created."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    payload = b"x" * size
    expected = DefaultRecordBatchBuilder.estimate_size_in_bytes(None, payload, headers or [])
    assert record_size(payload, headers) == expected
