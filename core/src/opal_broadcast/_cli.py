"""``opal-broadcast``: inspect plugins, check a backbone, publish, listen, and run the demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from ._broadcast import ENV_VAR, Broadcast
from ._errors import BroadcastError, ConfigurationError
from ._registry import default_registry

__all__ = ["main"]

EXIT_OK, EXIT_BACKBONE, EXIT_CONFIG = 0, 1, 2

_EPILOG = f"""\
URL arguments default to ${ENV_VAR}. Exit status: 0 ok, 1 the backbone failed,
2 the URL, options or installed plugins are wrong.

examples:
  opal-broadcast backends
  opal-broadcast check "${ENV_VAR}"
  opal-broadcast listen redis://localhost:6379 EventNotifier
  opal-broadcast watch redis://localhost:6379 EventNotifier
  opal-broadcast watch "${ENV_VAR}" --json
  opal-broadcast serve-metrics --port 9464
  opal-broadcast publish redis://localhost:6379 EventNotifier '{{"hello": 1}}'
  opal-broadcast demo
  opal-broadcast demo redis://localhost:6379 --processes 4
  opal-broadcast new-plugin nats --directory ~/src
"""


def _url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url",
        nargs="?",
        default=os.environ.get(ENV_VAR),
        help=f"broadcast URL, e.g. redis://localhost:6379 (default: ${ENV_VAR})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="opal-broadcast",
        description="Broadcast channel for OPAL server: check backbones, publish, listen, watch, "
        "demo.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library does")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    commands.add_parser(
        "backends",
        help="list installed backbones: scheme, distribution, version, contract, status",
        description="List every backbone plugin found, including those that failed to load: "
        "its schemes, distribution and version, the plugin contract version it implements, the "
        "optional capabilities it offers, and whether it loaded.",
    )

    check = commands.add_parser(
        "check",
        help="connect, subscribe, publish to itself, report the round-trip time",
        description="What to run against OPAL_BROADCAST_URI when something looks wrong: "
        "connects, subscribes to a private channel, publishes to it and waits for the message.",
    )
    _url_argument(check)
    check.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")

    publish = commands.add_parser(
        "publish", help="publish one message", description="Publish one message."
    )
    _url_argument(publish)
    publish.add_argument("channel")
    publish.add_argument("message")

    listen = commands.add_parser(
        "listen",
        help="print events of a channel as they arrive (Ctrl-C exits)",
        description="Subscribe to CHANNEL and print each event as it arrives; Ctrl-C exits.",
    )
    _url_argument(listen)
    listen.add_argument("channel")
    listen.add_argument("--count", type=int, default=0, help="exit after N events (default: never)")

    watch = commands.add_parser(
        "watch",
        help="live view: messages/s per channel, round-trip p50/p99, state, gaps (Ctrl-C exits)",
        description="A live view of the backbone, refreshed once a second: messages per second "
        "on each CHANNEL given, the round trip of its own probe (p50 and p99 over the last "
        "minute), the connection state, reconnects, gaps and rejected payloads. The terminal "
        "view needs rich (pip install 'opal-broadcast[watch]'); --json needs nothing.",
    )
    _url_argument(watch)
    watch.add_argument("channels", nargs="*", metavar="CHANNEL", help="channels to count")
    watch.add_argument("--json", action="store_true", help="print one JSON object a second")
    watch.add_argument(
        "--seconds", type=float, default=None, help="exit after this long (default: never)"
    )

    serve_metrics = commands.add_parser(
        "serve-metrics",
        help="serve the metrics every worker writes to a directory, for Prometheus",
        description="Serve, on one port, the metrics that worker processes export to DIRECTORY "
        "(each calls opal_broadcast.prometheus.serve_workers(None, directory=DIRECTORY)), each "
        "series labelled with its worker. While a worker already serves the directory, wait and "
        "take over when it exits. Needs pip install 'opal-broadcast[prometheus]'.",
    )
    serve_metrics.add_argument("--port", type=int, default=9464, help="default 9464")
    serve_metrics.add_argument("--host", default="0.0.0.0", help="default 0.0.0.0")
    serve_metrics.add_argument(
        "--directory", default=None, help="default: $OPAL_BROADCAST_METRICS_DIR or a temp folder"
    )

    demo = commands.add_parser(
        "demo",
        help="several workers exchanging messages, with a live count and latencies",
        description="Run workers that all publish and all receive over URL (default memory://), "
        "then print the delivery count and latency percentiles.",
    )
    demo.add_argument("url", nargs="?", default="memory://demo", help="default: memory://demo")
    demo.add_argument("--workers", type=int, default=4, help="workers (default 4)")
    demo.add_argument("--messages", type=int, default=250, help="messages per worker (default 250)")
    demo.add_argument(
        "--processes",
        type=int,
        default=0,
        metavar="N",
        help="run N workers, each in its own process (needs a real backbone, not memory://)",
    )
    demo.add_argument("--worker-of", default=None, help=argparse.SUPPRESS)

    new_plugin = commands.add_parser(
        "new-plugin",
        help="write a new backbone plugin package, ready for the conformance kit",
        description="Write opal-broadcast-NAME/: a package with the entry point and the plugin "
        "contract version, a connection class whose every method raises NotImplementedError "
        "naming the guide's section, and tests wired to the conformance kit.",
    )
    new_plugin.add_argument("name", help="the URL scheme it serves, e.g. nats (also its name)")
    new_plugin.add_argument(
        "--directory", default=".", help="where to write it (default: the current directory)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if getattr(args, "url", "") is None:
        print(f"error: give a URL or set {ENV_VAR}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if args.command == "backends":
            return _backends()
        if args.command == "new-plugin":
            from ._scaffold import write_plugin

            root = write_plugin(args.name, Path(args.directory))
            print(f"wrote {root}; next: docs/plugin-authors.md, then pytest in that folder")
            return EXIT_OK
        if args.command == "serve-metrics":
            return _serve_metrics(args)
        if args.command == "demo":
            from ._demo import run_demo

            workers = args.processes or args.workers
            return run_demo(args.url, workers, args.messages, args.processes > 0, args.worker_of)
        return int(anyio.run(_COMMANDS[args.command], args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Ctrl-C. On Python 3.10 the event loop's runner reports it as the main task's
        # cancellation (3.11 added Task.uncancel, which tells the two apart).
        return EXIT_OK
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BroadcastError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_BACKBONE


def _serve_metrics(args: argparse.Namespace) -> int:
    from .prometheus import MetricsServer, default_directory

    directory = Path(args.directory) if args.directory else default_directory(args.port)
    directory.mkdir(parents=True, exist_ok=True)
    server = MetricsServer(directory, args.host, args.port)
    announced = False
    while not server.try_to_serve(required=True):
        if not announced:
            print(f"a worker serves {directory} on port {args.port}; taking over when it exits")
            announced = True
        time.sleep(1)
    print(f"serving {directory} on http://{args.host}:{args.port}/metrics (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    finally:
        server.close()


def _backends() -> int:
    rows = [("SCHEME", "DISTRIBUTION", "VERSION", "CONTRACT", "CAPABILITIES", "STATUS")]
    for backbone in default_registry().backbones():
        distribution = backbone.distribution or "(in-process)"
        version = backbone.version or "-"
        if backbone.info is not None:
            contract = str(backbone.info.contract)
            status = "ok" if backbone.deprecation is None else "ok, deprecated contract"
            capabilities = ",".join(sorted(backbone.capabilities)) or "-"
            for scheme in backbone.info.schemes:
                rows.append((scheme, distribution, version, contract, capabilities, status))
        else:
            error = f"failed: {type(backbone.error).__name__}: {backbone.error}"
            rows.append((f"({backbone.name})", distribution, version, "-", "-", error))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        print("  ".join(cells) + "  " + row[5])
    return EXIT_OK


async def _check(args: argparse.Namespace) -> int:
    channel = f"opal-broadcast-check-{os.getpid()}-{time.monotonic_ns()}"
    broadcast = Broadcast(args.url, connect_timeout=args.timeout, publish_timeout=args.timeout)
    print(f"checking {broadcast.url}")
    with anyio.fail_after(args.timeout * 3):
        started = time.perf_counter()
        async with broadcast:
            connected = time.perf_counter()
            assert broadcast._hub is not None
            print(f"  served by {broadcast._hub.backbone.origin}")
            print(f"  connected in {(connected - started) * 1000:.1f} ms")
            async with broadcast.subscribe(channel) as subscriber:
                sent = time.perf_counter()
                await broadcast.publish(channel, "ping")
                with anyio.fail_after(args.timeout):
                    await subscriber.get()
                received = time.perf_counter()
    print(f"  round trip (publish -> subscriber) in {(received - sent) * 1000:.2f} ms")
    print("ok")
    return EXIT_OK


async def _publish(args: argparse.Namespace) -> int:
    async with Broadcast(args.url) as broadcast:
        await broadcast.publish(args.channel, args.message)
    return EXIT_OK


async def _listen(args: argparse.Namespace) -> int:
    async with Broadcast(args.url) as broadcast, broadcast.subscribe(args.channel) as subscriber:
        print(f"listening on {args.channel!r} at {broadcast.url} (Ctrl-C to stop)", flush=True)
        seen = 0
        async for event in subscriber:
            message = event.message
            text = message if isinstance(message, str) else message.decode(errors="replace")
            print(f"{event.channel}: {text}", flush=True)
            seen += 1
            if seen == args.count:
                break
    return EXIT_OK


async def _watch(args: argparse.Namespace) -> int:
    from ._watch import watch

    await watch(args.url, args.channels, as_json=args.json, seconds=args.seconds)
    return EXIT_OK


_COMMANDS = {"check": _check, "publish": _publish, "listen": _listen, "watch": _watch}
