"""The aiokafka clients of one connection: a producer, a consumer and the cluster's admin
client, started together and stopped within a bound, so that neither a failed start nor a close
leaves a socket or a task behind.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from opal_broadcast.plugin import BackboneURL

from . import _create_conn as create_conn
from ._cluster import Cluster
from ._connect import connect_error, ssl_context
from ._driver import aiokafka
from ._errors import Errors
from ._options import KafkaConfig
from ._redaction import protect

__all__ = ["Clients", "start_clients"]

logger = logging.getLogger("opal_broadcast.kafka")

#: Seconds a close waits for the clients to stop (the core time-boxes it at 2 s by default).
_STOP_TIMEOUT = 1.5
#: Seconds the starts of a cancelled connect get to end before they are cancelled too.
_START_GRACE = 0.5


@dataclass(frozen=True)
class Clients:
    producer: Any
    consumer: Any
    cluster: Cluster

    async def stop(self) -> None:
        """Stop every client, waiting at most _STOP_TIMEOUT; what is left finishes in the
        background. Never raises.

        ``producer.stop()`` first flushes what is queued: at once when the brokers answer, else
        once the queued batches expire (``request_timeout_ms``). Each stop runs in a task of its
        own, awaited with ``asyncio.wait``, which never raises the task's outcome: aiokafka's
        ``stop()`` can end with a ``CancelledError`` of its own (from an inner task it
        cancelled), which must not pass for a cancellation of the caller.
        """
        stopping = (_stop_producer(self.producer), self.consumer.stop(), self.cluster.close())
        stops = {_keep(asyncio.ensure_future(stop)) for stop in stopping}
        _, pending = await asyncio.wait(stops, timeout=_STOP_TIMEOUT)
        if pending:
            logger.debug("%d Kafka client(s) still closing in the background", len(pending))


async def start_clients(url: BackboneURL, config: KafkaConfig, errors: Errors) -> Clients:
    """Start the three clients, or raise a typed error saying why they could not start."""
    create_conn.check()  # a changed aiokafka is reported at connect, not at a failed connect
    tls = ssl_context(config, str(url))
    common = {**config.client_options(), "ssl_context": tls}
    producer = aiokafka.AIOKafkaProducer(
        **common, acks=config.acks, linger_ms=0, max_request_size=config.max_request_size
    )
    consumer = aiokafka.AIOKafkaConsumer(
        **common,
        group_id=None,
        enable_auto_commit=False,
        # Never skip silently: an out-of-range position is reported as a gap (see _reader).
        auto_offset_reset="none",
        # Broadcast latency, not batch throughput: answer a fetch as soon as one byte is there.
        fetch_min_bytes=1,
        fetch_max_wait_ms=config.fetch_max_wait_ms,
    )
    clients = Clients(producer, consumer, Cluster(common, producer.client, config, errors))
    protect(config.redact.secrets)  # aiokafka is imported by now: each of its loggers exists
    starting = asyncio.gather(
        producer.start(), consumer.start(), clients.cluster.start(), return_exceptions=True
    )
    try:
        results = await asyncio.shield(starting)
    except BaseException:
        # Cancelled (the core's connect timeout). aiokafka's start() leaves its bootstrap
        # connection open when cancelled during its metadata request, which a live broker
        # answers within milliseconds: the starts get a moment to end before they are
        # cancelled and everything stops, in the background.
        stop = _stop_once_started(starting, clients)
        _keep(asyncio.ensure_future(stop))
        raise
    failure = next((r for r in results if isinstance(r, BaseException)), None)
    if failure is None:
        return clients
    _keep(asyncio.ensure_future(clients.stop()))
    if not isinstance(failure, Exception):
        raise failure
    raise await connect_error(url, config, tls, failure)


async def _stop_once_started(starting: asyncio.Future[Any], clients: Clients) -> None:
    await asyncio.wait([starting], timeout=_START_GRACE)
    starting.cancel()
    await clients.stop()


async def _stop_producer(producer: Any) -> None:
    """``producer.stop()``, which waits until the queued batches are sent or expire. If the event
    loop ends first (``asyncio.run`` cancels every task left), the sockets are closed at once:
    else they stay open until garbage collected, each with a ``ResourceWarning``."""
    try:
        await producer.stop()
    except asyncio.CancelledError:
        await producer.client.close()
        raise


_running: set[asyncio.Future[Any]] = set()


def _keep(task: asyncio.Future[Any]) -> asyncio.Future[Any]:
    """Hold a reference to a clean-up task until it ends, then read its outcome so that none is
    logged as never retrieved (a close must not raise, and this one may outlive its caller)."""
    _running.add(task)

    def done(task: asyncio.Future[Any]) -> None:
        _running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.debug("closing a Kafka client failed (ignored): %r", task.exception())

    task.add_done_callback(done)
    return task
