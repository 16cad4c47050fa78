"""The supervisor of a shared connection: it probes the link and reconnects after a loss.

One background task per hub (see :mod:`._system_task`: the connection outlives the task that
opened it). It runs the liveness probe every ``probe_interval`` with a ``probe_timeout`` deadline,
and after each loss reconnects with capped, jittered exponential backoff. Once a new connection is
up the hub is *restoring*: publishes and new subscribers go through at once while the supervisor
subscribes again the channels that were live. If the supervisor itself dies, the hub fails loudly
(every subscriber gets a gap, ``health()`` says ``failed``) instead of leaving anyone deaf.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING

import anyio

from ._system_task import SystemTask

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["Supervisor", "stray_cancellation"]

logger = logging.getLogger("opal_broadcast")


class Supervisor:
    """Probes and reconnects one hub's connection."""

    __slots__ = ("_task", "hub")

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._task: SystemTask | None = None

    def start(self) -> None:
        """Start supervising (once the first connection is up)."""
        self._task = SystemTask(self._run)

    async def stop(self) -> None:
        """Stop supervising and wait for it, time-boxed (the hub is closing)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with anyio.move_on_after(self.hub.timings.close_timeout):
                await task.done.wait()

    async def _run(self) -> None:
        hub = self.hub
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._probe_forever)
                while True:
                    await hub.lost_event.wait()
                    await self._reconnect()
        except BaseException as exc:
            # Only close() may stop supervision; anything else would leave subscribers deaf.
            if hub.state != "closed":
                hub.failed(_innermost(exc))
            if isinstance(exc, Exception):
                return  # on trio an escaping error would crash the whole run
            raise

    async def _probe_forever(self) -> None:
        hub, timings = self.hub, self.hub.timings
        while True:
            await anyio.sleep(timings.probe_interval)
            link, connection = hub.link, hub.connection
            if hub.state != "connected" or link is None:
                continue  # restoring too: the contract promises no probe before it is done
            started = time.perf_counter()
            try:
                with anyio.fail_after(timings.probe_timeout):
                    await connection.probe()
            except BaseException as exc:
                if not (isinstance(exc, Exception) or stray_cancellation(exc)):
                    raise
                if hub.telemetry is not None:
                    hub.telemetry.probed(time.perf_counter() - started, exc)
                why = (
                    f"no answer within {timings.probe_timeout:g} s"
                    if isinstance(exc, TimeoutError)
                    else f"{type(exc).__name__}: {exc}"
                )
                hub.lost(link, f"liveness probe failed ({why})")
                continue
            if hub.telemetry is not None:
                hub.telemetry.probed(time.perf_counter() - started, None)

    async def _reconnect(self) -> None:
        """Connect again, restore the subscriptions; retry with backoff until both succeed."""
        hub = self.hub
        started = time.monotonic()
        attempt = 0
        while True:
            hub.lost_event = anyio.Event()
            await hub.drop_connection()
            try:
                await hub.connect_once()
                hub.enter("restoring")
                await hub.subscriptions.restore()
            except BaseException as exc:
                if not (isinstance(exc, Exception) or stray_cancellation(exc)):
                    raise
                if hub.link is not None:
                    hub.lost(hub.link, exc)  # what went live meanwhile hears of it
                if hub.telemetry is not None:
                    hub.telemetry.reconnect_failed(exc)
                hub.last_error = hub.redact.describe(exc)
                delay = hub.timings.backoff(attempt)
                attempt += 1
                logger.info(
                    "reconnecting to %s failed (attempt %d), next try in %.2f s: %s",
                    hub.url,
                    attempt,
                    delay,
                    hub.last_error,
                )
                await anyio.sleep(delay)
                continue
            if not hub.lost_event.is_set():
                break
            # Lost again while restoring (the loss was reported): go round again.
        hub.reconnected(started, attempt + 1)


def _innermost(exc: BaseException) -> BaseException:
    """The one error inside task-group wrappers (an exception group of one), for the report."""
    inner: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
    return _innermost(inner[0]) if len(inner) == 1 else exc


def stray_cancellation(exc: BaseException) -> bool:
    """A CancelledError raised by a driver's own inner task, not by a cancellation of ours.

    Some drivers (aiokafka's ``stop()``) re-raise the cancellation of a task they own; treated as
    a cancellation of ours it would end the supervisor and leave every subscriber deaf.
    """
    if not isinstance(exc, asyncio.CancelledError) or sys.version_info < (3, 11):
        return False
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0
