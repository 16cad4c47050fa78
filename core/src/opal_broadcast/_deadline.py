"""Deadlines for the publish hot path, cheaper than a cancel scope per call.

On asyncio an anyio cancel scope costs about as much as a loopback publish round trip's whole
framework budget (measured: ~11 us per ``fail_after`` on the CI machine). A hub publishes with one
timeout, so one timer can watch every in-flight call: each call registers its task and expiry, and
the timer cancels the expired ones with a marker the call turns into ``TimeoutError`` (the way
``asyncio.timeout`` does, with ``uncancel``). On trio, and on Python < 3.11 (no ``uncancel``),
anyio's ``fail_after`` is used unchanged.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

import anyio

from ._system_task import current_async_library

__all__ = ["Deadlines"]

_T = TypeVar("_T")
_EXPIRED = "opal_broadcast: deadline expired"


def _uncancel(task: asyncio.Task[object]) -> int:
    if sys.version_info >= (3, 11):
        return task.uncancel()
    raise AssertionError("native deadlines need Python 3.11")  # pragma: no cover


class Deadlines:
    """Bounds awaitables in time; one instance per hub."""

    def __init__(self) -> None:
        self._native = sys.version_info >= (3, 11) and current_async_library() == "asyncio"
        self._inflight: dict[object, tuple[float, asyncio.Task[object]]] = {}
        self._expired: set[object] = set()
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, awaitable: Awaitable[_T], timeout: float) -> _T:
        """Await ``awaitable``; raise ``TimeoutError`` if it takes more than ``timeout`` seconds."""
        if not self._native:
            with anyio.fail_after(timeout):
                return await awaitable
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        token = object()
        expiry = loop.time() + timeout
        self._inflight[token] = (expiry, task)
        if self._timer is None or self._timer.when() > expiry:
            self._arm(loop, expiry)
        try:
            return await awaitable
        except asyncio.CancelledError:
            # Ours if the timer cancelled this call and nobody else cancelled the task too.
            if token in self._expired and _uncancel(task) == 0:
                raise TimeoutError from None
            raise
        finally:
            del self._inflight[token]
            self._expired.discard(token)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        following = None
        for token, (expiry, task) in self._inflight.items():
            if expiry <= now:
                if token not in self._expired:
                    self._expired.add(token)
                    task.cancel(_EXPIRED)
            elif following is None or expiry < following:
                following = expiry
        if following is not None:
            self._arm(loop, following)
