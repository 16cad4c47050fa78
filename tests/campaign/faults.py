"""The campaign's faults on the test servers. Each returns a :class:`Fault` once the backbone is
ready again, and never leaves a server down or frozen, even when cancelled midway.

"Ready again" is measured as the moment the helper that brings the server back returns: the
restart helper returns after a real client round trip, so the server was accepting connections
at least that early, and the resume times measured from it are never flattered.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from types import ModuleType
from urllib.parse import urlencode

import anyio

from tests.campaign.harness import Inject, now
from tests.campaign.history import Fault
from tests.kafka.test_recovery import broker_pid, freeze
from tests.services import TcpProxy

__all__ = ["frozen_broker", "killing", "restarts", "stalled_proxy", "with_query"]


def with_query(url: str, **params: object) -> str:
    """``url`` with ``params`` added to its query string."""
    joiner = "&" if "?" in url else "?"
    return url + joiner + urlencode({k: str(v) for k, v in params.items()})


def restarts(services: ModuleType, name: str, *, down: float, kill: bool = False) -> Inject:
    """Stop server ``name`` (SIGTERM, or SIGKILL with ``kill``), wait ``down`` s, start it."""
    what = "SIGKILL" if kill else "restart"

    async def restart(i: int) -> Fault:
        started = now()
        try:
            await services.astop(name, kill=kill)
            await anyio.sleep(down)
        finally:
            with anyio.CancelScope(shield=True):
                await services.astart(name)
        return Fault(f"{what} {i + 1}", started, now())

    return restart


def killing(what: str, kill: Callable[[], Awaitable[int]]) -> Inject:
    """A server-side kill: ``kill()`` returns how many sessions it ended (at least one is needed;
    tried for up to a second, as a connection may be between two lives)."""

    async def inject(i: int) -> Fault:
        give_up = now() + 1.0
        while True:
            started = now()
            if await kill():
                return Fault(f"{what} {i + 1}", started, now())
            if now() > give_up:
                raise AssertionError(f"{what} {i + 1}: no session to kill (a harness problem)")
            await anyio.sleep(0.02)

    return inject


def stalled_proxy(proxy: TcpProxy, hold: float) -> Inject:
    """The proxy black-holes both directions (no FIN, no RST) for ``hold`` s, then passes again."""

    async def stall(i: int) -> Fault:
        started = now()
        proxy.stall()
        try:
            await anyio.sleep(hold)
        finally:
            proxy.resume()
        return Fault(f"stall {i + 1}", started, now())

    return stall


def frozen_broker(services: ModuleType, hold: float) -> Inject:
    """SIGSTOP the Kafka broker for ``hold`` s: its sockets stay open and nothing is answered."""

    async def stop(i: int) -> Fault:
        pid = broker_pid(services)
        started = now()
        try:
            await anyio.to_thread.run_sync(freeze, pid)
            await anyio.sleep(hold)
        finally:
            os.kill(pid, signal.SIGCONT)
        return Fault(f"SIGSTOP {i + 1}", started, now())

    return stop
