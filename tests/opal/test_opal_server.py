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
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def opal_server(
    python: Path, url: str, log: Path, app: str = "opal_broadcast_opal.asgi:app"
) -> Iterator[int]:
    """One OPAL server with 2 workers on ``url``; yields its port once it is healthy."""
    port = _free_port()
    env = {
        **os.environ,
        "OPAL_BROADCAST_URI": url,
        "OPAL_REPO_WATCHER_ENABLED": "false",
        "OPAL_STATISTICS_ENABLED": "false",
        "OPAL_LOG_COLORIZE": "false",
    }
    command = [
        str(python), "-m", "uvicorn", app, "--workers", "2",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with log.open("w") as output:
        # OPAL writes a jwks_dir/ into its working directory: keep it in the test's.
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=log.parent
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise AssertionError(f"opal-server exited: {log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"opal-server not healthy: {log.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(params=["postgres", "kafka"])
def backbone_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


def test_data_updates_reach_clients_of_every_opal_server(opal_python, backbone_url, tmp_path):
    """Updates of 100 and 20,000 bytes posted to server A reach 6 clients spread over A and B."""
    with ExitStack() as stack:
        ports = [
            stack.enter_context(opal_server(opal_python, backbone_url, tmp_path / f"opal-{i}.log"))
            for i in range(2)
        ]
        result = subprocess.run(
            [str(opal_python), str(CLIENT), json.dumps({"ports": ports, "clients": 3,
                                                         "sizes": [100, 20_000]})],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(report)
    assert report["posted"] == [200, 200]
    assert report["received"] == [[100, 20_000]] * 6, report


def test_a_postgres_restart_leaves_no_deaf_opal_worker(
    opal_python, postgres_url, services, tmp_path
):
    """Restart the backbone under two OPAL servers: afterwards every client still gets updates."""
    with ExitStack() as stack:
        ports = [
            stack.enter_context(opal_server(opal_python, postgres_url, tmp_path / f"opal-{i}.log"))
            for i in range(2)
        ]
        client = subprocess.Popen(
            [str(opal_python), str(CLIENT), json.dumps({"ports": ports, "clients": 3,
                                                         "sizes": [100, 20_000],
                                                         "pause_file": str(tmp_path / "go")})],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert client.stdout is not None
        ready = client.stdout.readline()
        assert ready.strip() == "subscribed", ready + (
            client.stderr.read() if client.stderr else ""
        )
        services.restart("postgres")
        time.sleep(3)  # OPAL's readers notice the gap, reconnect and subscribe again
        (tmp_path / "go").touch()
        out, err = client.communicate(timeout=180)
    assert client.returncode == 0, out + err
    report = json.loads(out.strip().splitlines()[-1])
    print(report)
    assert report["posted"] == [200, 200]
    assert report["received"] == [[100, 20_000]] * 6, report


def test_stock_opal_loses_large_updates_over_postgres(opal_python, postgres_url, tmp_path):
    """Negative control: OPAL's own broadcaster answers 200 and drops the 20,000-byte update."""
    with ExitStack() as stack:
        ports = [
            stack.enter_context(
                opal_server(
                    opal_python, postgres_url, tmp_path / f"opal-{i}.log", "opal_server.main:app"
                )
            )
            for i in range(2)
        ]
        result = subprocess.run(
            [str(opal_python), str(CLIENT), json.dumps({"ports": ports, "clients": 3,
                                                         "sizes": [100, 20_000]})],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(report)
    assert report["posted"] == [200, 200]
    assert all(seen[:1] == [100] for seen in report["received"]), "small updates must arrive"
    missed = sum(20_000 not in seen for seen in report["received"])
    assert missed >= 3, (
        f"the stock broadcaster delivered the large update to other servers: {report}"
    )
