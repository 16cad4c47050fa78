"""An unmodified opal-server (PyPI) on opal-broadcast: data updates reach clients of every server.

opal-server's dependency pins clash with this workspace (redis-py < 5), so it runs in a venv of its
own, with the core, the Postgres and Kafka plugins and ``integrations/opal-server`` (the entry
point that swaps the broadcaster). Two OPAL servers (two "containers") with two uvicorn workers
each share the backbone; websocket clients on both subscribe to OPAL's data topic; a data update
posted to one server's REST API must reach every client, including one larger than 8,000 bytes
(which OPAL's stock broadcaster loses on Postgres while answering 200: the negative control), and
must keep reaching them after the backbone restarts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.opal._uvicorn import uvicorn_app
from tests.services.fixtures import missing

pytestmark = pytest.mark.opal

ROOT = Path(__file__).resolve().parents[2]
OPAL_SERVER = "opal-server==0.9.9"
CLIENT = Path(__file__).with_name("opal_client.py")


@pytest.fixture(scope="session")
def opal_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with opal-server, our core, the Postgres and Kafka plugins, and the swap."""
    uv = shutil.which("uv")
    if uv is None:
        missing("uv is needed to build opal-server's venv: pip install uv")
    venv = tmp_path_factory.mktemp("opal") / "venv"
    subprocess.run([uv, "venv", "--python", sys.executable, str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    packages = [
        OPAL_SERVER, "aiofiles", "uvicorn",  # opal-server imports aiofiles without declaring it
        str(ROOT / "core"), str(ROOT / "plugins" / "postgres"), str(ROOT / "plugins" / "kafka"),
        str(ROOT / "integrations" / "opal-server"),
    ]  # fmt: skip
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(python), *packages],
        check=True, timeout=600,
    )  # fmt: skip
    return python


@contextmanager
def opal_server(
    python: Path, url: str, log: Path, app: str = "opal_broadcast_opal.asgi:app"
) -> Iterator[int]:
    """One OPAL server with 2 workers on ``url``; yields its port once it is healthy.

    It runs in ``log``'s directory, where OPAL writes its jwks_dir/.
    """
    env = {
        **os.environ,
        "OPAL_BROADCAST_URI": url,
        "OPAL_REPO_WATCHER_ENABLED": "false",
        "OPAL_STATISTICS_ENABLED": "false",
        "OPAL_LOG_COLORIZE": "false",
    }
    with uvicorn_app(python, [app, "--workers", "2"], env, log, health_path="/healthcheck") as port:
        yield port


def run_clients(python: Path, ports: list[int], **extra: str) -> dict[str, list[Any]]:
    """Run opal_client.py: 3 clients per server, updates of 100 and 20,000 bytes; its report."""
    arguments = json.dumps({"ports": ports, "clients": 3, "sizes": [100, 20_000], **extra})
    result = subprocess.run(
        [str(python), str(CLIENT), arguments],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, list[Any]] = json.loads(result.stdout.strip().splitlines()[-1])
    print(report)
    assert report["posted"] == [200, 200]
    return report


@pytest.fixture(params=["postgres", "kafka"])
def backbone_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@contextmanager
def two_servers(
    python: Path, url: str, directory: Path, app: str = "opal_broadcast_opal.asgi:app"
) -> Iterator[list[int]]:
    """Two OPAL servers (two "containers") of 2 workers each on ``url``; their ports."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(opal_server(python, url, directory / f"opal-{i}.log", app))
            for i in range(2)
        ]


def test_data_updates_reach_clients_of_every_opal_server(opal_python, backbone_url, tmp_path):
    """Updates of 100 and 20,000 bytes posted to server A reach 6 clients spread over A and B."""
    with two_servers(opal_python, backbone_url, tmp_path) as ports:
        report = run_clients(opal_python, ports)
    assert report["received"] == [[100, 20_000]] * 6, report


def test_a_postgres_restart_leaves_no_deaf_opal_worker(
    opal_python, postgres_url, services, tmp_path
):
    """Restart the backbone under two OPAL servers: afterwards every client still gets updates."""
    ready, go = tmp_path / "subscribed", tmp_path / "go"
    with two_servers(opal_python, postgres_url, tmp_path) as ports, ThreadPoolExecutor() as pool:
        clients = pool.submit(
            run_clients, opal_python, ports, ready_file=str(ready), go_file=str(go)
        )
        deadline = time.monotonic() + 60
        while not ready.exists() and not clients.done():
            assert time.monotonic() < deadline, "the clients did not subscribe within 60 s"
            time.sleep(0.1)
        services.restart("postgres")
        time.sleep(3)  # OPAL's readers notice the gap, reconnect and subscribe again
        go.touch()
        report = clients.result(timeout=180)
    assert report["received"] == [[100, 20_000]] * 6, report


def test_stock_opal_loses_large_updates_over_postgres(opal_python, postgres_url, tmp_path):
    """Negative control: OPAL's own broadcaster answers 200 and drops the 20,000-byte update."""
    with two_servers(opal_python, postgres_url, tmp_path, "opal_server.main:app") as ports:
        report = run_clients(opal_python, ports)
    assert all(seen[:1] == [100] for seen in report["received"]), "small updates must arrive"
    missed = sum(20_000 not in seen for seen in report["received"])
    assert missed >= 3, (
        f"the stock broadcaster delivered the large update to other servers: {report}"
    )
