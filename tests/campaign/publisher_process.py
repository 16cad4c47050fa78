"""The campaign's publisher in another process: publishes until its stdin closes.

    python publisher_process.py URL CHANNEL NAME OPTIONS_JSON [RATE]

Prints ``ready`` once connected, then one JSON line per publish:
``[seq, started, finished, "ok" | "unavailable" | "error:<type>: <text>"]`` (times are
``time.monotonic()``, comparable across processes on Linux). Publish errors are recorded and the
stream goes on, as a real publisher's would. The message is ``"NAME SEQ STARTED"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time

from opal_broadcast import BackboneUnavailable, Broadcast


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    sys.stdin.read()  # until EOF: the parent closed it, or died
    loop.call_soon_threadsafe(stop.set)


async def main(url: str, channel: str, name: str, options: dict[str, object], rate: float) -> None:
    stop = asyncio.Event()
    threading.Thread(
        target=_watch_stdin, args=(asyncio.get_running_loop(), stop), daemon=True
    ).start()
    interval = 1.0 / rate
    async with Broadcast(url, **options) as broadcast:  # type: ignore[arg-type]
        print("ready", flush=True)
        seq = 0
        due = time.monotonic()
        while not stop.is_set():
            seq += 1
            started = time.monotonic()
            try:
                await broadcast.publish(channel, f"{name} {seq} {started:.6f}")
                outcome = "ok"
            except BackboneUnavailable:
                outcome = "unavailable"
            except Exception as exc:  # counted, not fatal: the parent fails the scenario
                outcome = f"error:{type(exc).__name__}: {exc}"
            print(json.dumps([seq, started, time.monotonic(), outcome]), flush=True)
            due = max(due + interval, time.monotonic())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), due - time.monotonic())


if __name__ == "__main__":
    url, channel, name, options = sys.argv[1:5]
    rate = float(sys.argv[5]) if len(sys.argv) > 5 else 20.0
    asyncio.run(main(url, channel, name, json.loads(options), rate))
