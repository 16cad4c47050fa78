"""rediss:// with real certificate checks, and the two wrong-port mistakes failing fast and clearly."""

import time
import uuid

import anyio
import pytest

from opal_broadcast import BackboneUnavailable, BackboneURL, Broadcast

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


async def round_trip(url: str, **options: object) -> str:
    channel = f"tls-{uuid.uuid4().hex[:8]}"
    async with Broadcast(url, **{"connect_timeout": 5, **options}) as broadcast:
        async with broadcast.subscribe(channel) as subscriber:
            await broadcast.publish(channel, "secure")
            with anyio.fail_after(5):
                return str((await subscriber.get()).message)


def tls_port(rediss_url: str) -> int:
    port = BackboneURL.parse(rediss_url).hosts[0].port
    assert port is not None
    return port


async def test_client_certificate_and_key(rediss_url, test_ca):
    """A client certificate and key can be presented (the server verifies it when given)."""
    url = f"{rediss_url}&ssl_certfile={test_ca.client_cert}&ssl_keyfile={test_ca.client_key}"
    assert await round_trip(url) == "secure"


async def test_without_the_ca_the_certificate_does_not_verify(rediss_url):
    """The system trust store does not know the test CA: a typed error, in well under a second."""
    url = f"rediss://127.0.0.1:{tls_port(rediss_url)}/0"
    with anyio.fail_after(5), pytest.raises(BackboneUnavailable, match="did not verify") as caught:
        await round_trip(url)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)


async def test_host_name_is_checked_unless_turned_off(rediss_url, test_ca):
    """'vm' resolves to 127.0.0.1 but is not in the certificate: refused, unless hostname check is off."""
    url = f"rediss://vm:{tls_port(rediss_url)}/0?ssl_ca_certs={test_ca.ca_file}"
    with anyio.fail_after(5), pytest.raises(BackboneUnavailable, match="Hostname mismatch"):
        await round_trip(url)
    assert await round_trip(url + "&ssl_check_hostname=false") == "secure"


async def test_rediss_at_a_plaintext_port_fails_clearly(redis_url):
    """TLS to the plain port: not a hang until the connect timeout, a clear error within seconds."""
    port = BackboneURL.parse(redis_url).hosts[0].port
    for _ in range(3):  # the ClientHello's random bytes decide whether Redis answers or waits
        started = time.monotonic()
        with pytest.raises(BackboneUnavailable, match="TLS") as caught:
            await round_trip(f"rediss://127.0.0.1:{port}/0", connect_timeout=10)
        assert time.monotonic() - started < 4
        assert "within 10 s" not in str(caught.value)


async def test_redis_at_a_tls_port_fails_clearly(rediss_url):
    """Plain RESP to the TLS port: the server hangs up; the error suggests rediss://."""
    started = time.monotonic()
    with pytest.raises(BackboneUnavailable, match="use rediss://"):
        await round_trip(f"redis://127.0.0.1:{tls_port(rediss_url)}/0", connect_timeout=10)
    assert time.monotonic() - started < 4
