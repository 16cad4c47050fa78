"""Prometheus: one scrape sees every worker of a container, a worker takes the port over when the
serving one exits, and misconfiguration is a typed error naming the fix."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from opal_broadcast import ConfigurationError, prometheus
from opal_broadcast._prometheus_files import render

WORKER = textwrap.dedent(
    """
    import sys, anyio
    from opal_broadcast import Broadcast, prometheus

    port, directory, url, channel, count = sys.argv[1:6]
    prometheus.serve_workers(int(port), directory=directory, interval=0.2)

    async def main():
        async with Broadcast(url) as broadcast, broadcast.subscribe(channel):
            for number in range(int(count)):
                await broadcast.publish(channel, str(number))
            print("published", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)  # until the test closes stdin

    anyio.run(main)
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> tuple[str, str]:
    """The page and the pid that served it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode(), response.headers["X-Served-By"]


def sent_by_worker(page: str, channel: str) -> dict[str, float]:
    """messaging_client_sent_messages_total on ``channel``, by worker."""
    found = {}
    for line in page.splitlines():
        if line.startswith("messaging_client_sent_messages_total{") and channel in line:
            worker = re.search(r'worker="(\d+)"', line).group(1)
            found[worker] = float(line.rsplit(" ", 1)[1])
    return found


def scrape_showing(port: int, channel: str, expected: dict[str, float]) -> tuple[str, str] | None:
    """The scrape, once it shows exactly ``expected`` sent counts by worker."""
    page, served_by = scrape(port)
    return (page, served_by) if sent_by_worker(page, channel) == expected else None


def until(condition, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_one_scrape_sees_every_worker_and_a_sibling_takes_over(redis_url, tmp_path):
    """Three worker processes on Redis publish 3, 5 and 7 messages: one scrape shows each
    worker's count under its own label. The serving worker exits: another serves, with the
    two that are left."""
    port, channel = free_port(), f"prom-{uuid.uuid4().hex[:8]}"
    counts = (3, 5, 7)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(port), str(tmp_path), redis_url, channel, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in counts
    ]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "published"
        expected = {str(w.pid): float(n) for w, n in zip(workers, counts, strict=True)}
        page, served_by = until(lambda: scrape_showing(port, channel, expected))
        assert "# TYPE messaging_client_sent_messages_total counter" in page
        assert "messaging_client_operation_duration_seconds_bucket{" in page
        assert 'messaging_system="redis"' in page
        serving = next(w for w in workers if str(w.pid) == served_by)
        serving.stdin.close()
        serving.wait(timeout=10)
        left = {pid: n for pid, n in expected.items() if pid != served_by}
        _, new_server = until(lambda: scrape_showing(port, channel, left))
        assert new_server in left
    finally:
        for worker in workers:
            if worker.stdin and not worker.stdin.closed:
                worker.stdin.close()
            worker.wait(timeout=10)
            worker.stdout.close()


def test_a_port_taken_by_another_program_is_a_typed_error(tmp_path):
    """The port is held by something that is not a sibling worker: ConfigurationError naming
    OPAL_BROADCAST_METRICS_PORT."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = prometheus.MetricsServer(tmp_path, "127.0.0.1", port)
        with pytest.raises(ConfigurationError, match=prometheus.PORT_ENV):
            server.try_to_serve(required=True)
        assert not server.serving


def test_without_the_sdk_the_error_names_the_extra(monkeypatch, tmp_path):
    """opentelemetry-sdk missing: ConfigurationError with the pip install that fixes it."""
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.metrics", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'opal-broadcast\[prometheus\]'"):
        prometheus.serve_workers(None, directory=tmp_path)


def test_the_serve_metrics_command_serves_a_directory(tmp_path):
    """``opal-broadcast serve-metrics --port P --directory D`` serves what workers write to D."""
    port = free_port()
    (tmp_path / "1.json").write_text("[]")  # pid 1 is alive: an empty worker
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "opal_broadcast",
            "serve-metrics",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--directory",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        try:
            page, served_by = until(lambda: scrape(port))
            assert served_by == str(process.pid)
            assert page == "\n"
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_the_text_format_of_each_kind_of_metric():
    """Counters end in _total, seconds add _seconds, histograms give cumulative buckets with
    +Inf, _sum and _count; every series names its worker; label values are escaped."""
    families = [
        {
            "name": "messaging.client.sent.messages",
            "unit": "{message}",
            "description": "Sent.",
            "type": "counter",
            "points": [{"labels": {"messaging.system": 'a"b'}, "value": 3}],
        },
        {
            "name": "opal_broadcast.probe.duration",
            "unit": "s",
            "description": "Probe.",
            "type": "histogram",
            "points": [
                {"labels": {}, "bounds": [0.1, 1.0], "counts": [1, 2, 1], "sum": 2.5, "count": 4}
            ],
        },
        {
            "name": "opal_broadcast.connection.state",
            "unit": "1",
            "description": "State.",
            "type": "gauge",
            "points": [{"labels": {"opal_broadcast.state": "connected"}, "value": 1}],
        },
    ]
    assert render([(42, families)]) == textwrap.dedent(
        """\
        # HELP messaging_client_sent_messages_total Sent.
        # TYPE messaging_client_sent_messages_total counter
        messaging_client_sent_messages_total{messaging_system="a\\"b",worker="42"} 3
        # HELP opal_broadcast_connection_state State.
        # TYPE opal_broadcast_connection_state gauge
        opal_broadcast_connection_state{opal_broadcast_state="connected",worker="42"} 1
        # HELP opal_broadcast_probe_duration_seconds Probe.
        # TYPE opal_broadcast_probe_duration_seconds histogram
        opal_broadcast_probe_duration_seconds_bucket{le="0.1",worker="42"} 1
        opal_broadcast_probe_duration_seconds_bucket{le="1",worker="42"} 3
        opal_broadcast_probe_duration_seconds_bucket{le="+Inf",worker="42"} 4
        opal_broadcast_probe_duration_seconds_sum{worker="42"} 2.5
        opal_broadcast_probe_duration_seconds_count{worker="42"} 4
        """
    )


def test_files_of_workers_that_died_are_removed(tmp_path: Path):
    """A worker killed without cleanup leaves its file: the next scrape drops and deletes it."""
    from opal_broadcast._prometheus_files import live_snapshots

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (tmp_path / f"{dead}.json").write_text("[]")
    assert live_snapshots(tmp_path) == []
    assert not (tmp_path / f"{dead}.json").exists()


@pytest.mark.anyio
async def test_the_grafana_dashboard_queries_only_what_is_exported(recorded):
    """Every metric and label the dashboard in docs/ queries appears in the Prometheus page of a
    run that publishes, fails a publish, loses the connection, drops messages and measures."""
    import json

    import anyio
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    from opal_broadcast import BackboneUnavailable, Broadcast, _memory
    from opal_broadcast._memory import MemoryConnection
    from opal_broadcast._prometheus_files import _families
    from tests.core.test_registry import make_plugin

    links = []

    async def open(cls, url, options, link):
        links.append(link)
        return await MemoryConnection.open(url, options, link)

    plugin = make_plugin("postgresql", open=classmethod(open))
    url = f"postgresql://dash-{uuid.uuid4().hex[:6]}/db"
    options = {"probe_interval": 0.05, "reconnect_max_delay": 0.05, "publish_timeout": 0.2}
    async with Broadcast(url, backend=plugin, **options) as broadcast:
        async with broadcast.subscribe("c", max_queue=1, keep_going=True):
            for _ in range(3):
                await broadcast.publish("c", "x")
            links[-1].measure("postgresql.notification_queue.usage", 0.01)
            await anyio.sleep(0.2)  # probes
            _memory.simulate_loss(url, stay_down=True)
            with pytest.raises(BackboneUnavailable):
                await broadcast.publish("c", "lost")
            _memory.restore(url)
            with anyio.fail_after(5):
                while broadcast.health().state != "connected":
                    await anyio.sleep(0.01)
            links[-1].measure("postgresql.notification_queue.usage", 0.02)
        families = list(
            _families(recorded.reader.get_metrics_data(), AggregationTemporality.CUMULATIVE)
        )
    page = render([(7, families)])
    dashboard = json.loads(
        (Path(__file__).parents[2] / "docs" / "grafana-dashboard.json").read_text()
    )
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    expressions += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    text = " ".join(expressions)
    queried = set(re.findall(r"\b((?:opal_broadcast|messaging_client)_[a-z_]+)[{,]", text))
    exported = {line.split("{")[0] for line in page.splitlines() if not line.startswith("#")}
    labels = set(re.findall(r"\b([a-z_]+)=", page))
    assert len(queried) >= 9
    assert queried - exported == set()
    for group in re.findall(r"by \(([a-z_, ]+)\)", text):
        for label in group.split(","):
            assert label.strip() in labels | {"le"}, label
