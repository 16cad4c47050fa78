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
Redis restart: the second negative control). Across a one-second restart of Redis or Postgres
between two batches of updates, under two servers of three workers each, every update of the
second batch reaches every client that was connected when it was posted, on every worker: with
OPAL's reconnecting broadcaster, and with fastapi_websocket_pubsub's plain EventBroadcaster
(``OPAL_BROADCAST_RECONNECT_ENABLED=false``), whose one reader never subscribes again, so the
integration gives it ``gap_policy=continue``; with ``gap_policy=end`` in the URL its workers stay
deaf (the third negative control).
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
#: Workers per server in the restart-between-batches test.
BATCH_WORKERS = 3
#: A batch of data updates (their sizes): 20, one larger than Postgres's NOTIFY takes.
BATCH = [100] * 9 + [20_000] + [100] * 10
#: OPAL's log line (with OPAL_LOG_FORMAT_INCLUDE_PID) when a worker's listener gets our gap signal.
GAP_REPORT = re.compile(
    r"^\S+ \| (\d+) \|.*Broadcaster listener error \(attempt 1\): SubscriptionGap", re.M
)
#: The core's WARNING (through OPAL's log, with the worker's pid) when a worker loses the backbone.
LOSS_REPORT = re.compile(r"^\S+ \| (\d+) \|.*\|WARNING \| lost the connection to ", re.M)
#: What OPAL's reconnecting broadcaster logs whenever a subscriber ends, for whatever reason.
STOCK_GAP_REPORT = re.compile(r"Broadcast subscriber ended|Broadcaster listener error")
CLIENT = Path(__file__).with_name("opal_client.py")
GAP_POLICY_CHECK = Path(__file__).with_name("gap_policy_check.py")
#: OPAL's setting (opal_server/config.py) that swaps its reconnecting broadcaster for
#: fastapi_websocket_pubsub's plain EventBroadcaster.
PLAIN = {"OPAL_BROADCAST_RECONNECT_ENABLED": "false"}


@pytest.fixture(scope="session")
def opal_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with opal-server, our core, the three plugins, the swap, uvicorn and gunicorn."""
    packages = [
        OPAL_SERVER, "aiofiles", "uvicorn", "gunicorn",  # opal-server imports aiofiles undeclared
        f"{ROOT / 'core'}[prometheus]", str(ROOT / "integrations" / "opal-server"),
        *(str(ROOT / "plugins" / name) for name in ("postgres", "redis", "kafka")),
    ]  # fmt: skip
    return fresh_venv(tmp_path_factory.mktemp("opal"), packages, clean_env())


@contextmanager
def opal_server(
    python: Path, url: str, log: Path, app: str, env: dict[str, str], engine: str, workers: int
) -> Iterator[int]:
    """One OPAL server with ``workers`` workers on ``url``; yields its port once it is healthy.

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
        command = uvicorn_command(python, [app, "--workers", str(workers)])
    else:

        def command(port: int) -> list[str]:
            return [
                str(python), "-m", "gunicorn", "-b", f"127.0.0.1:{port}",
                "-k", "uvicorn.workers.UvicornWorker", f"--workers={workers}", app,
            ]  # fmt: skip

    with serve(command, env, log, health_path="/healthcheck", workers=workers) as port:
        yield port


@contextmanager
def two_servers(
    python: Path,
    url: str,
    directory: Path,
    app: str = "opal_broadcast_opal.asgi:app",
    env: dict[str, str] | None = None,
    engine: str = "uvicorn",
    workers: int = WORKERS,
) -> Iterator[list[int]]:
    """Two OPAL servers (two "containers") of ``workers`` workers each on ``url``; their ports."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                opal_server(
                    python, url, directory / f"opal-{i}.log", app, env or {}, engine, workers
                )
            )
            for i in range(2)
        ]


def opal_clients(python: Path, arguments: dict[str, Any]) -> dict[str, Any]:
    """Run opal_client.py with ``arguments``; its report."""
    result = subprocess.run(
        [str(python), str(CLIENT), json.dumps(arguments)],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def run_clients(python: Path, ports: list[int], **extra: object) -> dict[str, Any]:
    """Run opal_client.py: clients on every worker of every server, then the updates; its report."""
    arguments = {"ports": ports, "workers": WORKERS, "clients": 3, "sizes": SIZES, **extra}
    report = opal_clients(python, arguments)
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


def outage(services: Any, backbone: str, seconds: float = 1) -> None:
    """Stop the backbone for ``seconds``, then start it on the same data."""
    services.stop(backbone)
    try:
        time.sleep(seconds)
    finally:
        services.start(backbone)


def restart_between_batches(
    python: Path,
    url: str,
    backbone: str,
    services: Any,
    directory: Path,
    env: dict[str, str],
    hear_deadline: float = 90,
) -> tuple[list[int], dict[str, Any]]:
    """Two OPAL servers of 3 workers, clients on every worker: a batch of updates, a 1 s
    backbone restart, probes until every client hears through the backbone again, then the
    second batch. The ports, and the report.

    OPAL's resync (on by default with its reconnecting broadcaster) closes a worker's client
    websockets 2-4.5 s after the worker subscribes again; the clients reconnect, maybe to
    another worker. So the second batch waits until every client has heard a probe on its
    current connection and none has connected or left for 6 s, and a worker left without
    clients gets new ones.
    """
    ready, go = directory / "first-batch-done", directory / "go"
    arguments = {
        "workers": BATCH_WORKERS, "clients": 2 * BATCH_WORKERS, "before": BATCH, "after": BATCH,
        "ready_file": str(ready), "go_file": str(go), "hear_deadline": hear_deadline, "settle": 6,
    }  # fmt: skip
    env = {**env, "OPAL_LOG_FORMAT_INCLUDE_PID": "true"}
    with (
        two_servers(python, url, directory, env=env, workers=BATCH_WORKERS) as ports,
        ThreadPoolExecutor() as pool,
    ):
        clients = pool.submit(opal_clients, python, {"ports": ports, **arguments})
        try:
            deadline = time.monotonic() + 120
            while not ready.exists() and not clients.done():
                assert time.monotonic() < deadline, "the first batch was not done within 120 s"
                time.sleep(0.1)
            outage(services, backbone)
        finally:
            go.touch()  # the clients never wait for a test that has failed
        report = clients.result(timeout=400)
    print(batch_summary(report))
    return ports, report


def deliveries(report: dict[str, Any], batch: str) -> dict[int, dict[str, int]]:
    """Per worker: the updates of ``batch`` due to its clients, and how they fared.

    A client's connection (session) is due an update when it was up (subscribed) before the
    update was posted and not down by then: ``received`` it, ``missed`` it, or ``excused``
    (the connection went down before it arrived and before the batch's wait ended: OPAL closed
    it, so OPAL lost the update for that client). ``steady``: connections up through the whole
    batch, ``duplicates``: updates a connection received twice.
    """
    updates = [update for update in report["updates"] if update["batch"] == batch]
    end = report["batch_ends"][batch]
    tally: dict[int, dict[str, int]] = {}
    for record in report["clients"]:
        for session in record["sessions"]:
            counts = tally.setdefault(
                session["worker"],
                {"server": record["server"], "received": 0, "missed": 0, "excused": 0,
                 "steady": 0, "duplicates": 0},
            )  # fmt: skip
            got = session["got"]
            counts["duplicates"] += len(got) - len(set(got))
            down = session["down"] if session["down"] is not None else float("inf")
            if updates and session["up"] < updates[0]["posted_at"] and down > end:
                counts["steady"] += 1
            for update in updates:
                if not session["up"] < update["posted_at"] < down:
                    continue
                if update["id"] in got:
                    counts["received"] += 1
                else:
                    counts["excused" if down < end else "missed"] += 1
    return tally


def batch_summary(report: dict[str, Any]) -> str:
    """One line per worker and batch (for the log and the notes)."""
    lines = [
        f"heard again after {report.get('heard_again_after')} s, settled after "
        f"{report.get('settled_after')} s, {report.get('failed_probes')} failed probes; "
        f"{len(report['clients'])} clients, "
        f"{sum(record['connects'] for record in report['clients'])} connections"
    ]
    for batch in report["batch_ends"]:
        statuses = sorted({str(u["status"]) for u in report["updates"] if u["batch"] == batch})
        lines.append(f"batch {batch!r}, posts answered {statuses}:")
        for worker, counts in sorted(deliveries(report, batch).items(), key=str):
            due = counts["received"] + counts["missed"]
            lines.append(
                f"  server :{counts['server']} worker pid {worker}: {counts['received']}/{due}"
                f" delivered ({counts['excused']} excused, {counts['duplicates']} duplicates,"
                f" {counts['steady']} clients connected throughout)"
            )
    return "\n".join(lines)


def assert_every_update_reached_every_worker(report: dict[str, Any], batch: str) -> None:
    """Nothing missed or duplicated, all posts answered 200, and every worker of both servers
    had a client connected through the whole batch."""
    assert {u["status"] for u in report["updates"] if u["batch"] == batch} == {200}, batch_summary(
        report
    )
    tally = deliveries(report, batch)
    workers = {worker for worker, counts in tally.items() if counts["steady"]}
    assert None not in tally and len(workers) == 2 * BATCH_WORKERS, batch_summary(report)
    assert all(not counts["missed"] for counts in tally.values()), batch_summary(report)
    assert all(not counts["duplicates"] for counts in tally.values()), batch_summary(report)


@pytest.mark.parametrize("backbone", ["redis", "postgres"])
def test_every_update_after_a_backbone_restart_reaches_every_opal_client(
    opal_python, backbone, services, tmp_path, request
):
    """OPAL's default broadcaster (reconnecting, resyncing its clients after a gap) across a
    1 s restart: 100% of the second batch reaches every client on every worker."""
    url = str(request.getfixturevalue(f"{backbone}_url"))
    ports, report = restart_between_batches(opal_python, url, backbone, services, tmp_path, {})
    assert report["settled_after"] is not None, f"a worker stayed deaf: {batch_summary(report)}"
    for batch in ("before", "after"):
        assert_every_update_reached_every_worker(report, batch)
    assert not any(counts["excused"] for counts in deliveries(report, "before").values())
    for index, port in enumerate(ports):  # each worker saw the gap, so OPAL resynced its clients
        log = (tmp_path / f"opal-{index}.log").read_text()
        reported = set(map(int, GAP_REPORT.findall(log)))
        workers = {record["worker"] for record in report["clients"] if record["server"] == port}
        assert reported == workers, f"server {index}: gap reported by {reported} of {workers}"


@pytest.mark.parametrize("backbone", ["redis", "postgres"])
def test_opals_plain_broadcaster_hears_again_after_a_backbone_restart(
    opal_python, backbone, services, tmp_path, request
):
    """OPAL with its reconnecting broadcaster off: the plain EventBroadcaster's reader carries
    on across a 1 s restart (gap_policy=continue), every worker logs the loss at WARNING,
    no client is disconnected, and 100% of the second batch reaches every client."""
    url = str(request.getfixturevalue(f"{backbone}_url"))
    ports, report = restart_between_batches(opal_python, url, backbone, services, tmp_path, PLAIN)
    assert report["settled_after"] is not None, f"a worker stayed deaf: {batch_summary(report)}"
    for batch in ("before", "after"):
        assert_every_update_reached_every_worker(report, batch)
    assert all(record["connects"] == 1 for record in report["clients"]), batch_summary(report)
    for index, port in enumerate(ports):
        log = (tmp_path / f"opal-{index}.log").read_text()
        reported = set(map(int, LOSS_REPORT.findall(log)))
        workers = {record["worker"] for record in report["clients"] if record["server"] == port}
        assert reported == workers, f"server {index}: loss logged by {reported} of {workers}"


def test_opals_plain_broadcaster_stays_deaf_with_gap_policy_end(
    opal_python, redis_url, services, tmp_path
):
    """Negative control: a gap_policy in the URL wins over the integration's choice, and with
    ``end`` each plain EventBroadcaster's reader ends at the restart for good: no worker hears
    through the backbone again, and every worker misses updates of the second batch."""
    url = f"{redis_url}?gap_policy=end"
    _, report = restart_between_batches(
        opal_python, url, "redis", services, tmp_path, PLAIN, hear_deadline=20
    )
    assert report["heard_again_after"] is None, batch_summary(report)
    tally = deliveries(report, "after")
    assert len(tally) == 2 * BATCH_WORKERS, batch_summary(report)
    assert all(counts["missed"] for counts in tally.values()), batch_summary(report)


@pytest.mark.parametrize(
    ("env", "query", "outcome"),
    [
        ({}, "", "ends"),  # OPAL's default: its reconnecting broadcaster subscribes again
        (PLAIN, "", "continues"),
        (PLAIN, "?gap_policy=end", "ends"),
        ({"OPAL_BROADCAST_RECONNECT_ENABLED": "true"}, "?gap_policy=continue", "continues"),
    ],
)
def test_install_picks_the_gap_policy_from_opals_setting(opal_python, env, query, outcome):
    """install() gives OPAL's plain broadcaster gap_policy=continue and its reconnecting one
    the default, end; a gap_policy in the URL wins (memory://, no server)."""
    url = f"memory://gap-policy-check{query}"
    result = subprocess.run(
        [str(opal_python), str(GAP_POLICY_CHECK), url],
        capture_output=True, text=True, timeout=60, check=False, env={**clean_env(), **env},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == outcome, result.stdout + result.stderr


def test_one_prometheus_scrape_sees_every_opal_worker(opal_python, redis_url, tmp_path):
    """OPAL_BROADCAST_METRICS_PORT on an OPAL server: after clients on every worker received
    the updates, one scrape of that port shows each worker's received messages under its own
    worker label."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    env = {
        "OPAL_BROADCAST_METRICS_PORT": str(metrics_port),
        "OPAL_BROADCAST_METRICS_DIR": str(tmp_path / "metrics"),
    }
    app = "opal_broadcast_opal.asgi:app"
    log = tmp_path / "opal.log"
    with opal_server(opal_python, redis_url, log, app, env, "uvicorn", WORKERS) as port:
        report = run_clients(opal_python, [port])
        assert every_client_got_everything(report), summary(report)
        deadline = time.monotonic() + 60
        workers: set[str] = set()
        text: str | OSError = ""
        while len(workers) < WORKERS:
            assert time.monotonic() < deadline, f"workers seen: {workers}; last scrape: {text}"
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as page:
                    text = page.read().decode()
            except OSError as exc:
                text = exc
                continue
            workers = {
                line.split('worker="')[1].split('"')[0]
                for line in text.splitlines()
                if line.startswith("messaging_client_consumed_messages_total{")
            }
    assert workers == {str(client["worker"]) for client in report["clients"]}
