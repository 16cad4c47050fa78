"""An unmodified opal-server (PyPI) on opal-broadcast: data updates reach clients of every worker.

opal-server's dependency pins clash with this workspace (redis-py < 5), so it runs in a venv of its
own, with the core, the three plugins and ``integrations/opal-server`` (the entry point that swaps
the broadcaster). Two OPAL servers (two "containers") with two uvicorn workers each share the
backbone; websocket clients subscribe to OPAL's data topic until every worker holds some; a data
update posted to one server's REST API must reach every client, including one larger than 8,000
bytes (which OPAL's stock broadcaster loses on Postgres while answering 200: the negative control).
The backbone URIs are written the way OPAL deployments already write them. After a backbone
restart every worker must hear again, and on Postgres and Redis every worker must report the gap,
which OPAL answers with a resync of its clients (on OPAL's stock broadcaster no worker hears of a
Redis restart: the second negative control).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from opal_broadcast import BackboneURL
from tests._fresh_venv import ROOT, clean_env, fresh_venv
from tests.opal._uvicorn import serve, uvicorn_command

pytestmark = pytest.mark.opal

OPAL_SERVER = "opal-server==0.9.9"
WORKERS = 2
SIZES = [100, 20_000]
#: OPAL's log line (with OPAL_LOG_FORMAT_INCLUDE_PID) when a worker's listener gets our gap signal.
GAP_REPORT = re.compile(
    r"^\S+ \| (\d+) \|.*Broadcaster listener error \(attempt 1\): SubscriptionGap", re.M
)
#: What OPAL's reconnecting broadcaster logs whenever a subscriber ends, for whatever reason.
STOCK_GAP_REPORT = re.compile(r"Broadcast subscriber ended|Broadcaster listener error")
CLIENT = Path(__file__).with_name("opal_client.py")


@pytest.fixture(scope="session")
def opal_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with opal-server, our core, the three plugins, the swap, uvicorn and gunicorn."""
    packages = [
        OPAL_SERVER, "aiofiles", "uvicorn", "gunicorn",  # opal-server imports aiofiles undeclared
        str(ROOT / "core"), str(ROOT / "integrations" / "opal-server"),
        *(str(ROOT / "plugins" / name) for name in ("postgres", "redis", "kafka")),
    ]  # fmt: skip
    return fresh_venv(tmp_path_factory.mktemp("opal"), packages, clean_env())


@contextmanager
def opal_server(
    python: Path, url: str, log: Path, app: str, env: dict[str, str], engine: str
) -> Iterator[int]:
    """One OPAL server with 2 workers on ``url``; yields its port once it is healthy.

    ``engine``: "uvicorn" (``uvicorn --workers``), or "gunicorn" with uvicorn's worker class, as
    OPAL's container image starts ``$UVICORN_ASGI_APP``. It runs in ``log``'s directory, where
    OPAL writes its jwks_dir/.
    """
    env = {
        **clean_env(),
        **env,
        "OPAL_BROADCAST_URI": url,
        "OPAL_REPO_WATCHER_ENABLED": "false",
        "OPAL_STATISTICS_ENABLED": "false",
        "OPAL_LOG_COLORIZE": "false",
    }
    if engine == "uvicorn":
        command = uvicorn_command(python, [app, "--workers", str(WORKERS)])
    else:

        def command(port: int) -> list[str]:
            return [
                str(python), "-m", "gunicorn", "-b", f"127.0.0.1:{port}",
                "-k", "uvicorn.workers.UvicornWorker", f"--workers={WORKERS}", app,
            ]  # fmt: skip

    with serve(command, env, log, health_path="/healthcheck", workers=WORKERS) as port:
        yield port


@contextmanager
def two_servers(
    python: Path,
    url: str,
    directory: Path,
    app: str = "opal_broadcast_opal.asgi:app",
    env: dict[str, str] | None = None,
    engine: str = "uvicorn",
) -> Iterator[list[int]]:
    """Two OPAL servers (two "containers") of 2 workers each on ``url``; their ports."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                opal_server(python, url, directory / f"opal-{i}.log", app, env or {}, engine)
            )
            for i in range(2)
        ]


def run_clients(python: Path, ports: list[int], **extra: str) -> dict[str, Any]:
    """Run opal_client.py: clients on every worker of every server, then the updates; its report."""
    arguments = json.dumps(
        {"ports": ports, "workers": WORKERS, "clients": 3, "sizes": SIZES, **extra}
    )
    result = subprocess.run(
        [str(python), str(CLIENT), arguments],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    print(summary(report))
    assert report["posted"] == [200] * len(SIZES), report
    workers = {(client["server"], client["worker"]) for client in report["clients"]}
    assert None not in {worker for _, worker in workers}, report
    assert len(workers) == len(ports) * WORKERS, f"some worker got no client: {report}"
    return report


def summary(report: dict[str, Any]) -> str:
    """One line per worker: its clients and what each received (for the log and the notes)."""
    lines = [f"posted {report['posted']}"]
    if "heard_again_after" in report:
        lines[0] += f", heard again after {report['heard_again_after']} s"
    for server, worker in sorted({(c["server"], c["worker"]) for c in report["clients"]}):
        seen = [
            c["seen"] for c in report["clients"] if (c["server"], c["worker"]) == (server, worker)
        ]
        lines.append(f"server :{server} worker pid {worker}: {len(seen)} clients, received {seen}")
    return "\n".join(lines)


def every_client_got_everything(report: dict[str, Any]) -> bool:
    return all(client["seen"] == SIZES for client in report["clients"])


@pytest.fixture(params=["postgres", "redis", "kafka"])
def deployed_url(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    """A backbone URI written as OPAL deployments write it today, and the environment with it."""
    if request.param == "postgres":  # libpq keepalives, which asyncpg alone would refuse
        url = str(request.getfixturevalue("postgres_password_url"))
        keepalives = "keepalives=1&keepalives_idle=30&keepalives_interval=10&keepalives_count=3"
        return url.replace("postgresql://", "postgres://") + f"?{keepalives}", {}
    if request.param == "redis":  # TLS and a password (OPAL's docs say it is unsupported)
        url = BackboneURL.parse(str(request.getfixturevalue("rediss_password_url")))
        ca = request.getfixturevalue("test_ca").ca_file  # trusted the way OpenSSL reads it
        return url.reveal().split("?")[0], {"SSL_CERT_FILE": str(ca)}
    # Several bootstrap servers (the second is down) and the SASL settings in KAFKA_* variables.
    sasl = BackboneURL.parse(str(request.getfixturevalue("kafka_sasl_url")))
    host = sasl.hosts[0]
    url = f"kafka://{host.host}:{host.port},127.0.0.1:{request.getfixturevalue('refused_port')()}"
    return url, {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_PLAIN_USERNAME": str(sasl.username),
        "KAFKA_PLAIN_PASSWORD": str(sasl.password),
    }


def test_data_updates_reach_clients_of_every_opal_worker(opal_python, deployed_url, tmp_path):
    """Updates of 100 and 20,000 bytes posted to server A reach clients on all 4 workers of A and B."""
    url, env = deployed_url
    with two_servers(opal_python, url, tmp_path, env=env) as ports:
        report = run_clients(opal_python, ports)
    assert every_client_got_everything(report), summary(report)


def test_opal_as_its_container_image_starts_it(opal_python, postgres_url, tmp_path):
    """gunicorn with uvicorn's workers and our app, as OPAL's image runs ``$UVICORN_ASGI_APP``:
    each worker builds its own app, so updates still reach clients on every worker."""
    app = "opal_broadcast_opal.asgi:app"
    with two_servers(opal_python, postgres_url, tmp_path, app, engine="gunicorn") as ports:
        report = run_clients(opal_python, ports)
    assert every_client_got_everything(report), summary(report)


def restart_under_opal(
    python: Path, url: str, app: str, backbone: str, services: Any, directory: Path
) -> tuple[list[int], dict[str, Any]]:
    """Clients on every worker of two OPAL servers; restart the backbone; probe until every
    client hears through the backbone again; post the updates. The ports, and the report.

    OPAL's own reaction to a gap, reconnecting every client so that it re-fetches its data, is
    turned off: the clients stay put, so what they receive shows what each worker hears. OPAL's
    log lines carry the worker's pid.
    """
    ready, go = directory / "subscribed", directory / "go"
    env = {"OPAL_BROADCAST_RESYNC_ON_RECONNECT": "false", "OPAL_LOG_FORMAT_INCLUDE_PID": "true"}
    with two_servers(python, url, directory, app, env) as ports, ThreadPoolExecutor() as pool:
        clients = pool.submit(
            run_clients, python, ports, ready_file=str(ready), go_file=str(go), hear_deadline=90
        )
        try:
            deadline = time.monotonic() + 120
            while not ready.exists() and not clients.done():
                assert time.monotonic() < deadline, "the clients did not subscribe within 120 s"
                time.sleep(0.1)
            services.restart(backbone)
        finally:
            go.touch()  # the clients never wait for a test that has failed
        report = clients.result(timeout=300)
    assert report["heard_again_after"] is not None, f"a worker stayed deaf: {summary(report)}"
    assert all(client["connects"] == 1 for client in report["clients"]), summary(report)
    assert every_client_got_everything(report), summary(report)
    return ports, report


@pytest.mark.parametrize("backbone", ["postgres", "redis", "kafka"])
def test_a_backbone_restart_leaves_no_deaf_opal_worker(
    opal_python, backbone, services, tmp_path, request
):
    """Restart the backbone under two OPAL servers: every worker hears again, and on Postgres
    and Redis (which keep nothing for a subscriber that is away) every worker reports the gap."""
    url = str(request.getfixturevalue(f"{backbone}_url"))
    app = "opal_broadcast_opal.asgi:app"
    ports, report = restart_under_opal(opal_python, url, app, backbone, services, tmp_path)
    if backbone != "kafka":  # Kafka keeps what was published; a short restart may lose nothing
        for index, port in enumerate(ports):
            log = (tmp_path / f"opal-{index}.log").read_text()
            reported = set(map(int, GAP_REPORT.findall(log)))
            workers = {client["worker"] for client in report["clients"] if client["server"] == port}
            assert reported == workers, f"server {index}: gap reported by {reported} of {workers}"


def test_stock_opal_never_hears_of_a_redis_restart(opal_python, redis_url, services, tmp_path):
    """Negative control: on OPAL's own broadcaster, redis-py reconnects in silence. No worker
    learns of the gap, so OPAL never resyncs its clients: what was published meanwhile is lost."""
    restart_under_opal(opal_python, redis_url, "opal_server.main:app", "redis", services, tmp_path)
    for index in range(2):
        log = (tmp_path / f"opal-{index}.log").read_text()
        assert not STOCK_GAP_REPORT.search(log), f"server {index} heard of the restart"


def test_stock_opal_loses_large_updates_over_postgres(opal_python, postgres_url, tmp_path):
    """Negative control: OPAL's own broadcaster answers 200 and drops the 20,000-byte update."""
    with two_servers(opal_python, postgres_url, tmp_path, "opal_server.main:app") as ports:
        report = run_clients(opal_python, ports)
    seen = [client["seen"] for client in report["clients"]]
    assert all(got[:1] == [100] for got in seen), f"small updates must arrive: {summary(report)}"
    assert sum(20_000 not in got for got in seen) >= 3, (
        f"the stock broadcaster delivered the large update to other workers: {summary(report)}"
    )
