"""``python -m tests.services``: start, stop and inspect the test servers (see the package doc)."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time

from . import NAMES, ServiceError, down, restart, start, state_dir, status, stop, up, urls


def _env_name(key: str, value: str) -> str:
    return f"OPAL_TEST_{key.upper()}" + ("_URL" if "://" in value else "")


def _print_urls(names: list[str]) -> None:
    items = urls(*names)
    width = max(map(len, items))
    for key, value in items.items():
        print(f"  {key:<{width}}  {value}")
    print(f"(also in {state_dir() / 'urls.json'}; `python -m tests.services env` gives exports)")


def _up(names: list[str]) -> int:
    begin = time.monotonic()
    results = up(*names)
    for name, (started, seconds) in results.items():
        how = f"started in {seconds:.1f} s" if started else "already running"
        print(f"{name:<9} ready  ({how})")
    _print_urls(list(results))
    print(f"up: {time.monotonic() - begin:.1f} s")
    return 0


def _status() -> int:
    rows = status()
    for row in rows:
        if row.ready:
            state = "ready"
        elif row.running:
            state = "running, NOT ready"
        else:
            state = "partly running" if row.pids else "stopped"
        pids = ",".join(map(str, row.pids)) or "-"
        print(f"{row.name:<9} {state:<18} pid {pids:<18} log {' '.join(map(str, row.logs))}")
    return 0 if all(row.ready for row in rows) else 3


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command; exit 1 with the log on a ServiceError."""
    parser = argparse.ArgumentParser(prog="python -m tests.services", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    cmd_up = commands.add_parser("up", help="start what is not running (default: all), wait")
    cmd_up.add_argument("names", nargs="*", metavar="NAME", help=f"any of: {' '.join(NAMES)}")
    commands.add_parser("down", help="stop every service")
    commands.add_parser("status", help="show processes and readiness (exit 3 if not all ready)")
    commands.add_parser("env", help="print `export OPAL_TEST_...=...` lines")
    for command in ("start", "stop", "restart"):
        sub = commands.add_parser(command, help=f"{command} one service")
        sub.add_argument("name", choices=NAMES)
        if command != "start":
            sub.add_argument(
                "--kill", action="store_true", help="SIGKILL / immediate, no clean stop"
            )
    args = parser.parse_args(argv)
    logging.getLogger("aiokafka").setLevel(
        logging.CRITICAL
    )  # retries while a broker boots are noise
    if args.command == "up" and set(args.names) - set(NAMES):
        parser.error(f"unknown service(s) {sorted(set(args.names) - set(NAMES))}; known: {NAMES}")
    try:
        if args.command == "up":
            return _up(args.names)
        if args.command == "down":
            down()
        elif args.command == "status":
            return _status()
        elif args.command == "env":
            print(f"export OPAL_TEST_SERVICES_DIR={shlex.quote(str(state_dir()))}")
            for key, value in urls().items():
                print(f"export {_env_name(key, value)}={shlex.quote(value)}")
        elif args.command == "start":
            print(f"{args.name}: " + ("started" if start(args.name) else "already running"))
        elif args.command == "stop":
            stop(args.name, kill=args.kill)
            print(f"{args.name}: stopped")
        else:
            restart(args.name, kill=args.kill)
            print(f"{args.name}: restarted")
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
