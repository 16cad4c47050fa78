"""The PostgreSQL plugin's uses of asyncpg internals against their public alternatives, in one sitting.

For each internal, the figure that decides between it and asyncpg's public API (the rule, from
issue 15: the public path unless it costs more than 10% against the goals, publish >= 1.04x raw
and subscriber CPU <= 0.93x raw; a kept internal is fenced in
plugins/postgres/src/opal_broadcast_postgres/_fences/, which quotes these figures):

* ``bind_execute`` (dropped; the plugin uses ``fetchval``): seconds per awaited publish through
  ``Broadcast.publish``, with the lane sending through the protocol's ``bind_execute`` or the
  public ``PreparedStatement.fetchval``, each as a ratio to raw ``fetchval`` on the same session
  (bench_postgres.py's "publish" figure); also the two calls alone. Batches: one ``unnest``
  statement's ``fetchval`` (what the plugin sends) against ``executemany``, both public.
* ``_process_notification`` (fenced): process CPU per delivered message, the override against
  ``add_listener``, each as a ratio to a raw asyncpg listener (bench_postgres.py's "subscriber
  CPU" figure); and the time to enter 1,000 subscriptions at once (one multi-statement LISTEN
  against one ``add_listener`` round trip per channel).
* ``_transport`` (fenced): the keepalive each end of the socket gets through the plugin (set on
  the client's socket) and through asyncpg's public ``server_settings`` (the server's
  ``tcp_keepalives_*``), and the time a connect takes either way.

The contenders take turns (in blocks of 25 calls, or paired within a round), and every figure
is the median of ``--rounds`` rounds: the machine is noisy, a ratio within one round is not.

Run: uv run python bench/bench_postgres_internals.py [--rounds 5] [--url ...]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import socket
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import asyncpg

from opal_broadcast import Broadcast
from opal_broadcast.plugin import BackboneURL
from opal_broadcast_postgres import _connection
from opal_broadcast_postgres._connect import open_connection
from opal_broadcast_postgres._options import PostgresConfig
from opal_broadcast_postgres._publisher import MANY, SINGLE

DEFAULT_URL = "postgresql://opal@127.0.0.1:25432/opal"
PAYLOAD = '{"op":"update","path":"/policies/rbac","id":"0123456789abcdef"}'
FLOOD = "SELECT count(pg_notify($1, $2 || i)) FROM generate_series(1, $3::int) AS i"
KEEPALIVE = {"keepalives_idle": 11, "keepalives_interval": 4, "keepalives_count": 2}
SERVER_KEEPALIVE = {
    "tcp_keepalives_idle": "11",
    "tcp_keepalives_interval": "4",
    "tcp_keepalives_count": "2",
}


def _channel(prefix: str) -> str:
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


async def _blocks(
    contenders: dict[str, Callable[[], Awaitable[Any]]], count: int
) -> dict[str, float]:
    """Seconds per call of each contender, taking turns in blocks of 25 (median block)."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for block in range(count // 25 + 1):
        order = list(contenders.items())
        if block % 2:
            order.reverse()
        for name, call in order:
            started = time.perf_counter()
            for _ in range(25):
                await call()
            if block:  # the first block warms up
                times[name].append((time.perf_counter() - started) / 25)
    return {name: statistics.median(values) for name, values in times.items()}


# -- bind_execute -------------------------------------------------------------------------------


def _bind_execute(statement: Any) -> Callable[[str, str], Awaitable[object]]:
    """``statement.fetchval`` without asyncpg's Python layers: its protocol's ``bind_execute``.

    What the plugin used until the public ``fetchval`` measured within 10% of it; kept here so
    the comparison can be made again on another asyncpg.
    """
    bind_execute = statement._connection._protocol.bind_execute
    state = statement._state

    def notify(channel: str, payload: str) -> Awaitable[object]:
        return bind_execute(state, (channel, payload), "", 1, False, None)

    return notify


async def publish(url: str, count: int) -> dict[str, float]:
    """Seconds per publish: the library on either path, raw fetchval, and the two calls alone."""
    async with Broadcast(url) as broadcast:
        channel = _channel("pub")
        await broadcast.publish(channel, PAYLOAD)  # opens the one lane sequential publishes use
        [lane] = broadcast._hub.connection.publisher._lanes
        fenced, public = _bind_execute(lane.single), lane.single.fetchval
        raw = await lane.connection.prepare(SINGLE, name="bench_raw")

        async def library(notify: Callable[[str, str], Awaitable[object]]) -> None:
            lane.notify = notify
            await broadcast.publish(channel, PAYLOAD)

        return await _blocks(
            {
                "raw fetchval": lambda: raw.fetchval(channel, PAYLOAD),
                "library, bind_execute": lambda: library(fenced),
                "library, fetchval": lambda: library(public),
                "bind_execute alone": lambda: fenced(channel, PAYLOAD),
                "fetchval alone": lambda: public(channel, PAYLOAD),
            },
            count,
        )


async def batches(url: str, count: int, size: int = 50) -> dict[str, float]:
    """Seconds per message in batches of ``size``: one unnest statement, or executemany."""
    connection = await asyncpg.connect(url, statement_cache_size=0)
    try:
        channel = _channel("batch")
        many = await connection.prepare(MANY, name="bench_many")
        single = await connection.prepare(SINGLE, name="bench_single")
        payloads = [f"{PAYLOAD}#{i}" for i in range(size)]
        rows = [(channel, payload) for payload in payloads]
        seconds = await _blocks(
            {
                "fetchval(unnest)": lambda: many.fetchval([channel] * size, payloads),
                "executemany": lambda: single.executemany(rows),
            },
            count // size,
        )
    finally:
        await connection.close()
    return {name: value / size for name, value in seconds.items()}


# -- _process_notification ----------------------------------------------------------------------


@contextmanager
def _notification_path(fenced: bool) -> Iterator[None]:
    """New listening sessions use the override (``fenced``) or plain ``add_listener``."""
    overriding = _connection.listening_class
    _connection.listening_class = overriding if fenced else lambda: asyncpg.Connection
    try:
        yield
    finally:
        _connection.listening_class = overriding


async def receive_raw(url: str, count: int) -> float:
    """CPU seconds for a raw asyncpg listener (callback -> asyncio.Queue -> task) to get ``count``."""
    channel = _channel("sub")
    listener, trigger = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        queue: asyncio.Queue[str] = asyncio.Queue()
        await listener.add_listener(channel, lambda *args: queue.put_nowait(args[3]))

        async def consume() -> None:
            for _ in range(count):
                await queue.get()

        gc.collect()
        cpu = time.process_time()
        consumer = asyncio.ensure_future(consume())
        await trigger.fetchval(FLOOD, channel, PAYLOAD + "#", count)
        await consumer
        return time.process_time() - cpu
    finally:
        await listener.close()
        await trigger.close()


async def receive_library(url: str, count: int, fenced: bool) -> float:
    """CPU seconds for one subscriber of a Broadcast to get ``count`` (override or add_listener)."""
    channel = _channel("sub")
    trigger = await asyncpg.connect(url)
    try:
        with _notification_path(fenced):
            broadcast = Broadcast(url, max_queue=count + 1)
            await broadcast.__aenter__()
        try:
            async with broadcast.subscribe(channel) as subscriber:
                gc.collect()
                cpu = time.process_time()
                consumer = asyncio.ensure_future(_consume(subscriber, count))
                await trigger.fetchval(FLOOD, channel, PAYLOAD + "#", count)
                await consumer
                return time.process_time() - cpu
        finally:
            await broadcast.__aexit__(None, None, None)
    finally:
        await trigger.close()


async def _consume(subscriber: Any, count: int) -> None:
    get = subscriber.get
    for _ in range(count):
        await get()


async def subscribe_many(url: str, count: int, fenced: bool) -> float:
    """Seconds to enter ``count`` subscriptions to distinct channels at once."""
    prefix = _channel("many")
    with _notification_path(fenced):
        broadcast = Broadcast(url)
        await broadcast.__aenter__()
    try:
        async with AsyncExitStack() as stack:
            started = time.perf_counter()
            await asyncio.gather(
                *(
                    stack.enter_async_context(broadcast.subscribe(f"{prefix}-{i}"))
                    for i in range(count)
                )
            )
            return time.perf_counter() - started
    finally:
        await broadcast.__aexit__(None, None, None)


# -- _transport ---------------------------------------------------------------------------------


def _client_keepalive(connection: Any) -> tuple[int, int]:
    """(SO_KEEPALIVE, TCP_KEEPIDLE) of the client's socket (read here through ``_transport``)."""
    sock = connection._transport.get_extra_info("socket")
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
    )


async def keepalive(url: str, count: int) -> dict[str, Any]:
    """Per connect: seconds, and the keepalive each end of the socket ends up with."""
    config = PostgresConfig.parse(BackboneURL.parse(url), KEEPALIVE)

    async def fenced() -> Any:
        return await open_connection(config, "bench")

    async def public() -> Any:
        return await asyncpg.connect(url, server_settings=SERVER_KEEPALIVE)

    figures: dict[str, Any] = {}
    for name, connect in (("socket (fenced)", fenced), ("server_settings", public)):
        connection = await connect()
        try:
            server = await connection.fetchval("SHOW tcp_keepalives_idle")
            figures[name] = (*_client_keepalive(connection), server)
        finally:
            await connection.close()
    times: dict[str, list[float]] = {"socket (fenced)": [], "server_settings": []}
    for round_ in range(count):
        order = [("socket (fenced)", fenced), ("server_settings", public)]
        for name, connect in order if round_ % 2 else order[::-1]:
            started = time.perf_counter()
            connection = await connect()
            times[name].append(time.perf_counter() - started)
            await connection.close()
    for name, values in times.items():
        figures[name + " s"] = statistics.median(values)
    return figures


# -- driver -------------------------------------------------------------------------------------


async def measure(url: str, rounds: int) -> None:
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    n_sub = 20_000
    for round_ in range(rounds):
        for name, value in (await publish(url, 2000)).items():
            add(f"publish {name}", value)
        for name, value in (await batches(url, 10_000)).items():
            add(f"batch {name}", value)
        order = [None, True, False] if round_ % 2 else [False, True, None]
        for fenced in order:
            if fenced is None:
                add("cpu raw", await receive_raw(url, n_sub) / n_sub)
            else:
                add(f"cpu {fenced}", await receive_library(url, n_sub, fenced) / n_sub)
        for fenced in (round_ % 2 == 0, round_ % 2 == 1):
            add(f"subscribe {fenced}", await subscribe_many(url, 1000, fenced))
        print(f"  round {round_ + 1}/{rounds} done", flush=True)
    f = {key: statistics.median(values) for key, values in samples.items()}
    us = 1e6
    raw = f["publish raw fetchval"]
    fenced, public = f["publish library, bind_execute"], f["publish library, fetchval"]
    print(f"\nasyncpg {asyncpg.__version__}, medians of {rounds} rounds\n")
    print("bind_execute (publish, one awaited publisher):")
    print(f"  raw fetchval on the lane's session   {raw * us:6.1f} us")
    print(f"  library via bind_execute (internal)  {fenced * us:6.1f} us  {raw / fenced:.3f}x raw")
    print(f"  library via fetchval (public)        {public * us:6.1f} us  {raw / public:.3f}x raw")
    print(f"  public costs {public / fenced - 1:+.1%} per publish against the internal")
    alone_f, alone_p = f["publish bind_execute alone"], f["publish fetchval alone"]
    print(
        f"  the calls alone: bind_execute {alone_f * us:.1f} us, fetchval {alone_p * us:.1f} us"
        f" ({alone_p / alone_f - 1:+.1%})"
    )
    unnest, many = f["batch fetchval(unnest)"], f["batch executemany"]
    print(
        f"  batches of 50 (both public): fetchval(unnest) {unnest * us:.1f} us per message, "
        f"executemany {many * us:.1f} us ({many / unnest:.2f}x)"
    )
    cpu_raw, cpu_f, cpu_p = f["cpu raw"], f["cpu True"], f["cpu False"]
    print("\n_process_notification (subscriber CPU per delivered message):")
    print(f"  raw asyncpg listener                 {cpu_raw * us:6.2f} us")
    print(
        f"  library via the override (fenced)    {cpu_f * us:6.2f} us  {cpu_f / cpu_raw:.3f}x raw"
    )
    print(
        f"  library via add_listener (public)    {cpu_p * us:6.2f} us  {cpu_p / cpu_raw:.3f}x raw"
    )
    print(f"  public costs {cpu_p / cpu_f - 1:+.1%} CPU per message against the internal")
    sub_f, sub_p = f["subscribe True"], f["subscribe False"]
    print(
        f"  1,000 subscriptions entered at once: {sub_f:.3f} s (one multi-statement LISTEN) vs "
        f"{sub_p:.3f} s (add_listener, a round trip each): {sub_p / sub_f:.1f}x"
    )
    k = await keepalive(url, 20)
    print("\n_transport (libpq keepalives=1, keepalives_idle=11, interval=4, count=2):")
    for name in ("socket (fenced)", "server_settings"):
        so, idle, server = k[name]
        print(
            f"  {name:<16} client socket SO_KEEPALIVE={so} TCP_KEEPIDLE={idle}; "
            f"server's tcp_keepalives_idle={server}; connect {k[name + ' s'] * 1e3:.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    asyncio.run(measure(arguments.url, arguments.rounds))


if __name__ == "__main__":
    main()
