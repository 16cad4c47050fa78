"""What a test can see of resources left behind: open file descriptors, threads, and objects
garbage-collected unclosed (their ``ResourceWarning``)."""

from __future__ import annotations

import gc
import os
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

__all__ = ["nothing_left_open"]


def _descriptors() -> dict[int, str]:
    """This process's open sockets (on Linux; every descriptor where the kind is unknown).

    Only sockets: an event loop may open other descriptors of its own lazily (uvloop opens
    ``/dev/null``), which it closes with the loop."""
    folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    found = {}
    for name in os.listdir(folder):
        try:
            what = os.readlink(os.path.join(folder, name))
        except OSError:  # closed meanwhile, or the listing's own descriptor
            continue
        if what.startswith("socket:") or not what.startswith(("/", "pipe:", "anon_inode:")):
            found[int(name)] = what
    return found


@asynccontextmanager
async def nothing_left_open(settle: float = 5.0) -> AsyncIterator[None]:
    """Fail if the block leaves a descriptor or a thread open, or an object to be collected
    unclosed. Waits up to ``settle`` seconds for cleanup the plugin runs in the background."""
    before_fds, before_threads = set(_descriptors()), set(threading.enumerate())
    yield
    with anyio.move_on_after(settle):
        while True:
            gc.collect()
            extra_fds = {fd: what for fd, what in _descriptors().items() if fd not in before_fds}
            extra_threads = [t for t in threading.enumerate() if t not in before_threads]
            if not extra_fds and not extra_threads:
                break
            await anyio.sleep(0.05)
    unraisable: list[str] = []
    previous = sys.unraisablehook

    def keep(report: Any) -> None:
        unraisable.append(f"{report.exc_type.__name__}: {report.exc_value}")

    sys.unraisablehook = keep
    try:
        gc.collect()
    finally:
        sys.unraisablehook = previous
    problems = [f"descriptor {fd} ({what})" for fd, what in sorted(extra_fds.items())]
    problems += [f"thread {thread.name!r}" for thread in extra_threads]
    problems += unraisable
    assert not problems, "left open: " + "; ".join(problems)
