"""Prometheus for operators who do not run an OpenTelemetry collector.

OPAL runs several uvicorn workers per container, and the OpenTelemetry Prometheus exporter has no
multiprocess support. Here each worker writes its metrics to a shared directory every few seconds,
and one of them (whichever holds the directory's lock) serves every live worker's metrics on one
port, each series labelled with its ``worker`` (the process id). If that worker exits, another
takes the port over at its next export. Call :func:`serve_workers` in every worker, before its
first ``connect()``; the OPAL integration does it when ``OPAL_BROADCAST_METRICS_PORT`` is set::

    from opal_broadcast import prometheus

    prometheus.serve_workers(9464)

``opal-broadcast serve-metrics --port 9464 --directory DIR`` serves a directory from a process
of its own (workers then call ``serve_workers(None, directory=DIR)``). Needs
``pip install 'opal-broadcast[prometheus]'`` (the OpenTelemetry SDK). Where a collector runs,
export OTLP to it instead: see ``docs/observability.md``.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import os
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from ._errors import ConfigurationError
from ._prometheus_files import live_snapshots, make_exporter, render

__all__ = ["DIRECTORY_ENV", "PORT_ENV", "MetricsServer", "serve_workers"]

PORT_ENV = "OPAL_BROADCAST_METRICS_PORT"
DIRECTORY_ENV = "OPAL_BROADCAST_METRICS_DIR"


def default_directory(port: int | None) -> Path:
    """``$OPAL_BROADCAST_METRICS_DIR``, else a folder of the temporary directory per port."""
    configured = os.environ.get(DIRECTORY_ENV)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"opal-broadcast-metrics-{port or 'workers'}"


def serve_workers(
    port: int | None,
    *,
    host: str = "0.0.0.0",
    directory: str | os.PathLike[str] | None = None,
    interval: float = 5.0,
) -> Path:
    """Export this process's metrics to the workers' directory, and serve them all on ``port``
    (``None``: export only). Returns the directory. Raises ``ConfigurationError`` when the SDK is
    missing, or when ``port`` is taken by a program other than a sibling worker."""
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    except ImportError:
        raise ConfigurationError(
            "Serving metrics to Prometheus needs the OpenTelemetry SDK: "
            "pip install 'opal-broadcast[prometheus]'."
        ) from None
    from . import telemetry

    folder = Path(directory) if directory is not None else default_directory(port)
    folder.mkdir(parents=True, exist_ok=True)
    server = MetricsServer(folder, host, port) if port is not None else None
    if server is not None:
        server.try_to_serve(required=True)
    exporter = make_exporter(folder, server.try_to_serve if server is not None else None)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval * 1000)
    provider = MeterProvider(metric_readers=[reader])
    telemetry.instrument(meter_provider=provider)
    atexit.register(provider.shutdown)
    if server is not None:
        atexit.register(server.close)
    return folder


class MetricsServer:
    """Serves a workers' directory on ``host:port`` while it holds the directory's lock."""

    def __init__(self, directory: Path, host: str, port: int) -> None:
        self.directory = directory
        self.host = host
        self.port = port
        self._lock_file: IO[str] | None = None
        self._http: ThreadingHTTPServer | None = None

    @property
    def serving(self) -> bool:
        return self._http is not None

    def try_to_serve(self, required: bool = False) -> bool:
        """Serve if no sibling does (the lock is free). ``required``: a port taken by another
        program is a ``ConfigurationError`` (else it is left for the next try)."""
        if self._http is not None:
            return True
        lock_file = (self.directory / "server.lock").open("a")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.close()
            return False  # a sibling serves
        try:
            self._http = ThreadingHTTPServer((self.host, self.port), _handler(self.directory))
        except OSError as exc:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
            lock_file.close()
            if exc.errno == errno.EADDRINUSE and required:
                raise ConfigurationError(
                    f"Port {self.port} on {self.host} is taken by another program: choose a free "
                    f"one ({PORT_ENV}, or --port)."
                ) from None
            if required:
                raise ConfigurationError(
                    f"Cannot serve metrics on {self.host}:{self.port}: {exc}."
                ) from None
            return False
        self._lock_file = lock_file
        threading.Thread(
            target=self._http.serve_forever, name="opal-broadcast-metrics", daemon=True
        ).start()
        return True

    def close(self) -> None:
        """Stop serving and let a sibling take over."""
        http, self._http = self._http, None
        if http is not None:
            http.shutdown()
            http.server_close()
        lock_file, self._lock_file = self._lock_file, None
        if lock_file is not None:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
            lock_file.close()


def _handler(directory: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/", "/metrics"):
                self.send_error(404, "metrics are at /metrics")
                return
            body = render(live_snapshots(directory)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Served-By", str(os.getpid()))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds is not worth a log line

    return Handler
