"""Background work that belongs to no caller's task group.

A shared backbone connection outlives the ``Broadcast`` (and the task) that opened it, so its
supervisor cannot live in a caller's task group. anyio has no detached spawn, so this is the one
place that speaks to the event loop natively: an asyncio task, or a trio system task. The spawned
function runs anyio code either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel

__all__ = ["SystemTask", "current_async_library", "current_loop"]


def current_loop() -> object:
    """An object identifying the running event loop (the asyncio loop, or trio's token)."""
    try:
        return asyncio.get_running_loop()  # the common case, and much cheaper than anyio's token
    except RuntimeError:
        return anyio.lowlevel.current_token().native_token


def current_async_library() -> str:
    """``"asyncio"`` or ``"trio"``: the library running the current task."""
    native = anyio.lowlevel.current_token().native_token
    return "asyncio" if isinstance(native, asyncio.AbstractEventLoop) else "trio"


class SystemTask:
    """Run ``fn()`` in the background until it returns or :meth:`cancel` is called.

    ``fn`` must handle its own errors: on trio an escaping exception would crash the run.
    """

    def __init__(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._scope = anyio.CancelScope()
        self.done = anyio.Event()

        async def run() -> None:
            try:
                with self._scope:
                    await fn()
            finally:
                self.done.set()

        if current_async_library() == "asyncio":
            self._task = asyncio.get_running_loop().create_task(run())
        else:
            import trio

            trio.lowlevel.spawn_system_task(run)

    def cancel(self) -> None:
        """Ask the task to stop; ``await done.wait()`` to wait for it."""
        self._scope.cancel()
