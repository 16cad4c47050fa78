"""For drivers with no disconnect callback: a reader task whose end reports the loss."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from ._contract import Link

__all__ = ["start_reader"]


def start_reader(link: Link, reader: Coroutine[Any, Any, None], *, what: str) -> asyncio.Task[None]:
    """Run ``reader`` (the loop that receives and calls ``link.deliver``) as an asyncio task.

    If it returns or raises, the connection is reported lost through ``link.lost`` (its
    exception, or "``what`` ended"): with a driver that never says its connection closed, the end
    of the read loop is how the core finds out. Cancelling the task (in ``close()``) reports
    nothing. Keep the task and cancel it in ``close()``.
    """
    task = asyncio.ensure_future(reader)

    def ended(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        link.lost(error if error is not None else f"{what} ended")

    task.add_done_callback(ended)
    return task
