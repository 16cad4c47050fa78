"""One Kafka connection: an aiokafka producer and consumer, the reader that feeds the core, and
the consumer positions that survive the core's reconnects.

Imported only when the first ``kafka://`` connection opens (see ``plugin``); with ``_cluster``, the
only modules that import the driver.

Delivery. One consumer without a group (``group_id=None``) is assigned every partition of every
subscribed topic by hand: every process reads every message, with no rebalances and no commits.
Each partition's position (the next offset to deliver) is kept here, in ``positions``, which is
the core's ``link.resume_state``: it is fixed before ``subscribe()`` returns (the end offset, so a
message published afterwards is never missed), moved past every delivered record, and after a
loss the new connection seeks back to it, so a message published after the broker returns, even
before this process has reconnected, is still delivered.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

from opal_broadcast.plugin import (
    BackboneError,
    BackboneUnavailable,
    BackboneURL,
    BroadcastError,
    InvalidMessage,
    Link,
    MessageTooLarge,
    lazy_import,
)

from ._connect import connect_error, ssl_context
from ._options import KafkaConfig, topic_prefix
from ._redaction import protect
from ._topics import TopicNames

# aiokafka (and _cluster, built on it) are imported when the first connection opens: the core
# imports this module at discovery, which must not depend on the driver.
_DIST = "opal-broadcast-kafka"
aiokafka = lazy_import("aiokafka", distribution=_DIST)
kafka_errors = lazy_import("aiokafka.errors", distribution=_DIST)
aiokafka_conn = lazy_import("aiokafka.conn", distribution=_DIST)
aiokafka_helpers = lazy_import("aiokafka.helpers", distribution=_DIST)
aiokafka_records = lazy_import("aiokafka.record.default_records", distribution=_DIST)
aiokafka_structs = lazy_import("aiokafka.structs", distribution=_DIST)
cluster = lazy_import("opal_broadcast_kafka._cluster", distribution=_DIST)

__all__ = ["BYTES_HEADER", "KafkaConnection"]

DEFAULT_CAP = 1048576
#: Upper bound of what a record batch adds to a payload without headers (61 + 21 bytes).
RECORD_OVERHEAD = 100
_prefixes: dict[str, TopicNames] = {}

logger = logging.getLogger("opal_broadcast.kafka")

#: Record header marking a message published as ``bytes``: it is delivered as ``bytes`` even when
#: it happens to be valid UTF-8. Records without it (``str`` messages, other producers) are
#: delivered as ``str`` when they are UTF-8, else as ``bytes``.
BYTES_HEADER = "opal-broadcast-bytes"
_BYTES_HEADERS = [(BYTES_HEADER, b"")]
#: Seconds a close waits for the clients to stop (the core time-boxes it at 2 s by default).
_STOP_TIMEOUT = 1.5
#: How long one ``getmany`` waits before the reader loops (it returns as soon as records come).
_READ_WAIT_MS = 10_000
#: Room left for the record batch's own header when checking a payload against the size cap.
_BATCH_OVERHEAD = 1024


class KafkaConnection:
    """The handle the core passes back to every hook."""

    def __init__(
        self,
        url: BackboneURL,
        config: KafkaConfig,
        link: Link,
        producer: Any,
        consumer: Any,
    ) -> None:
        self.where = str(url)
        self.config = config
        self.link = link
        self.producer = producer
        self.consumer = consumer
        self.topics = TopicNames(config.topic_prefix)
        self.cluster = cluster.Cluster(producer.client, config, self.where)
        #: subscribed topic -> its channel
        self.channels: dict[str, str] = {}
        #: next offset to deliver, per assigned partition (shared with ``link.resume_state``)
        self.positions: dict[Any, int] = {}
        #: positions a previous connection left; taken by the subscribes that restore channels
        self._restorable: dict[Any, int] = {}
        #: topic -> its partitions, and the one this connection publishes to (one partition per
        #: publisher keeps each publisher's messages in order)
        self._partitions: dict[str, list[int]] = {}
        self._publish_to: dict[str, int] = {}
        self._prepare_lock = asyncio.Lock()
        self._seed = 0
        self._lost = False  # the core has been told (or its probe failed): deliver no more
        self._closing = False
        self._reader: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, url: BackboneURL, options: Mapping[str, Any], link: Link
    ) -> KafkaConnection:
        """Start a producer and a consumer, or raise a typed error saying why not."""
        config = KafkaConfig.parse(url, options)
        protect(config.redact.secrets)
        for secret in config.redact.secrets:
            link.keep_secret(secret)
        tls = ssl_context(config, str(url))
        common = {**config.client_options(), "ssl_context": tls}
        producer = aiokafka.AIOKafkaProducer(
            **common, acks=config.acks, linger_ms=0, max_request_size=config.max_request_size
        )
        consumer = aiokafka.AIOKafkaConsumer(
            **common,
            group_id=None,
            enable_auto_commit=False,
            # Never skip silently: an out-of-range position is reported as a gap (see _read).
            auto_offset_reset="none",
            # Broadcast latency, not batch throughput: answer a fetch as soon as one byte is there.
            fetch_min_bytes=1,
            fetch_max_wait_ms=config.fetch_max_wait_ms,
        )
        try:
            results = await asyncio.gather(
                producer.start(), consumer.start(), return_exceptions=True
            )
        except BaseException:
            # Cancelled (the core's connect timeout): an await here would be cancelled too.
            _keep(asyncio.ensure_future(_stop_all(producer, consumer)))
            raise
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            _keep(asyncio.ensure_future(_stop_all(producer, consumer)))
            if not isinstance(failure, Exception):
                raise failure
            raise await connect_error(url, config, tls, failure)
        connection = cls(url, config, link, producer, consumer)
        connection._adopt(link.resume_state)
        return connection

    @classmethod
    def check_channel(cls, url: BackboneURL, options: Mapping[str, Any], channel: str) -> None:
        """The channel's topic name must be a valid Kafka topic name."""
        _names(topic_prefix(url, options)).topic(channel)

    @classmethod
    def check_message(
        cls, url: BackboneURL, options: Mapping[str, Any], channel: str, message: str | bytes
    ) -> None:
        """Within ``max_request_size`` (a generous estimate: only called while the brokers are
        unreachable; once connected, :meth:`publish` checks the exact record size)."""
        cap = options.get("max_request_size", url.options.get("max_request_size", DEFAULT_CAP))
        try:
            size = len(message.encode() if isinstance(message, str) else message)
        except UnicodeEncodeError as exc:
            raise InvalidMessage(
                f"The message is not valid Unicode text ({exc.reason} at {exc.start}): encode "
                "it yourself and publish bytes."
            ) from None
        if str(cap).isdigit() and size + RECORD_OVERHEAD > int(cap):
            raise MessageTooLarge(
                f"The message is {size} bytes, over the {cap}-byte max_request_size; nothing was "
                "sent. Send less, or raise the kafka:// option max_request_size together with "
                "the brokers' message.max.bytes."
            )

    def _adopt(self, state: dict[str, Any]) -> None:
        # What the previous connection delivered up to (its positions) and what it had not
        # restored yet (its restorables) become this one's restorables. Done only once connected:
        # a failed attempt must not lose them.
        restorable: dict[Any, int] = state.get("restorable") or {}
        restorable.update(state.get("positions") or {})
        state["restorable"] = self._restorable = restorable
        state["positions"] = self.positions
        self._seed = state.setdefault("seed", random.getrandbits(31))
        self._reader = asyncio.ensure_future(self._read())

    async def close(self) -> None:
        """Stop reading, then stop both clients. Never raises.

        ``producer.stop()`` first flushes what is queued: at once when the brokers answer, else
        once the queued batches expire (``request_timeout_ms``). The wait is bounded here and the
        stop goes on in the background, so the core's close budget holds and nothing leaks.
        """
        self._closing = True
        reader = self._reader
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await _stop_all(self.producer, self.consumer)

    # -- messages -----------------------------------------------------------------------------

    async def publish(self, channel: str, message: str | bytes) -> None:
        """Send one message; return once the brokers acknowledged it (``acks``)."""
        topic = self.topics.topic(channel)
        if isinstance(message, str):
            try:
                payload = message.encode()
            except UnicodeEncodeError as exc:
                raise InvalidMessage(
                    f"The message is not valid Unicode text ({exc.reason} at {exc.start}): "
                    "encode it yourself and publish bytes."
                ) from None
            headers = None
        else:
            payload, headers = message, _BYTES_HEADERS
        if len(payload) > self.config.max_request_size - _BATCH_OVERHEAD:
            self._check_size(payload, headers)
        partition = self._publish_to.get(topic)
        if partition is None:
            partition = await self._prepare(topic)
        try:
            sent = await self.producer.send(topic, payload, partition=partition, headers=headers)
        except kafka_errors.KafkaError as exc:
            raise self._publish_error(topic, exc) from exc
        try:
            await sent
        except asyncio.CancelledError:
            # The core's deadline: the message may still go out; nobody will read the outcome.
            sent.add_done_callback(_retrieve)
            raise
        except kafka_errors.KafkaError as exc:
            raise self._publish_error(topic, exc) from exc

    def _check_size(self, payload: bytes, headers: list[tuple[str, bytes]] | None) -> None:
        size = aiokafka_records.DefaultRecordBatchBuilder.estimate_size_in_bytes(
            None, payload, headers or []
        )
        cap = self.config.max_request_size
        if size > cap:
            raise MessageTooLarge(
                f"The message is {len(payload)} bytes ({size} as a Kafka record), over the "
                f"{cap}-byte max_request_size; nothing was sent. Send less, or raise the kafka:// "
                "option max_request_size together with the brokers' message.max.bytes."
            )

    async def _prepare(self, topic: str) -> int:
        """Create ``topic`` if needed and learn its partitions; the partition to publish to."""
        async with self._prepare_lock:
            partition = self._publish_to.get(topic)
            if partition is not None:
                return partition
            await self.cluster.create_topic(topic)
            try:
                partitions: list[int] = sorted(await self.producer.partitions_for(topic))
            except kafka_errors.KafkaError as exc:
                raise self._unavailable(f"find the partitions of {topic!r} on", exc) from exc
            self._partitions[topic] = partitions
            chosen = self._publish_to[topic] = partitions[self._seed % len(partitions)]
            return chosen

    # -- subscriptions ------------------------------------------------------------------------

    async def subscribe(self, channels: Sequence[str]) -> None:
        """Read every partition of each channel's topic from a fixed position, then return."""
        for channel in channels:
            await self._subscribe(channel)

    async def _subscribe(self, channel: str) -> None:
        topic = self.topics.topic(channel)
        await self._prepare(topic)
        wanted = [aiokafka_structs.TopicPartition(topic, p) for p in self._partitions[topic]]
        starts = {tp: self.positions[tp] for tp in wanted if tp in self.positions}
        resumed = {tp: self._restorable[tp] for tp in wanted if tp in self._restorable}
        missing = [tp for tp in wanted if tp not in starts and tp not in resumed]
        if missing:
            try:
                ends = await self.consumer.end_offsets(missing)
            except kafka_errors.KafkaError as exc:
                raise self._unavailable(f"read the end offsets of {topic!r} on", exc) from exc
            starts.update(ends)
        # No await from here on: the channel, the positions and the assignment change together.
        for tp, offset in resumed.items():
            self._restorable.pop(tp, None)
            starts.setdefault(tp, offset)
        self.channels[topic] = channel
        self.positions.update(starts)
        self._assign()

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        """Stop reading the channels' partitions; the other channels keep their positions."""
        topics = {self.topics.topic(channel) for channel in channels}
        removed = {topic for topic in topics if self.channels.pop(topic, None) is not None}
        if not removed:
            return
        for tp in [tp for tp in self.positions if tp.topic in removed]:
            del self.positions[tp]
        self._assign()

    def _assign(self) -> None:
        # assign() replaces the whole assignment and forgets every position: seek them all back
        # (records fetched but not delivered yet are simply fetched again).
        consumer = self.consumer
        if not self.positions:
            consumer.unsubscribe()
            return
        consumer.assign(list(self.positions))
        for tp, offset in self.positions.items():
            consumer.seek(tp, offset)

    async def _read(self) -> None:
        """Hand every fetched record to the core, in partition order, and advance positions."""
        consumer, deliver = self.consumer, self.link.deliver
        channels, positions = self.channels, self.positions
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=_READ_WAIT_MS)
            except kafka_errors.ConsumerStoppedError:
                return
            except kafka_errors.OffsetOutOfRangeError as exc:
                if not await self._out_of_range(exc):
                    return
                continue
            except kafka_errors.RecordTooLargeError as exc:
                self._skip_too_large(exc)
                continue
            except Exception as exc:
                self._report(f"the consumer failed ({self._describe(exc)})")
                return
            if self._lost or self._closing:
                return  # the core no longer counts on this connection: leave positions as they are
            for tp, records in batches.items():
                channel = channels.get(tp.topic)
                start = positions.get(tp)
                if channel is None or start is None:
                    continue
                if records[0].offset < start:
                    records = [record for record in records if record.offset >= start]
                    if not records:
                        continue
                for record in records:
                    value = record.value
                    if record.headers or value is None:
                        message = _decode(record)
                    else:
                        try:  # the common case inline: this loop runs once per message
                            message = value.decode()
                        except UnicodeDecodeError:
                            message = value
                    if not deliver(channel, message):
                        # The core dropped this connection: the record was not taken, so the
                        # next connection resumes from it.
                        positions[tp] = record.offset
                        return
                positions[tp] = records[-1].offset + 1

    async def _out_of_range(self, exc: Exception) -> bool:
        """The brokers no longer have a position of ours (retention deleted it while we were
        away, or a replica lost data): resume from the nearest offset that exists and report
        the gap on that channel. False if the connection must be given up instead."""
        partitions = list(exc.args[0]) if exc.args and isinstance(exc.args[0], dict) else []
        try:
            first = await self.consumer.beginning_offsets(partitions)
            last = await self.consumer.end_offsets(partitions)
        except Exception as error:
            self._report(f"a position was out of range and the offsets unknown ({error!r})")
            return False
        if self._lost or self._closing:
            return False
        for tp in partitions:
            channel = self.channels.get(tp.topic)
            if tp not in self.positions or channel is None:
                continue
            kept = self.positions[tp]
            self.positions[tp] = min(max(kept, first[tp]), last[tp])
            self.consumer.seek(tp, self.positions[tp])
            self.link.gap(
                channel,
                f"offset {kept} of {tp.topic}[{tp.partition}] no longer exists (deleted by "
                f"retention or lost by the brokers); resumed at {self.positions[tp]}",
            )
        return True

    def _skip_too_large(self, exc: Exception) -> None:
        # Only brokers older than 0.10.1 send this (newer ones return an oversized batch whole);
        # aiokafka has stepped past the record already.
        tp, offset = (exc.args[1], exc.args[2]) if len(exc.args) >= 3 else (None, None)
        channel = self.channels.get(getattr(tp, "topic", ""))
        if tp in self.positions and isinstance(offset, int) and channel is not None:
            self.positions[tp] = offset + 1
            self.link.gap(channel, f"a record larger than the fetch size was skipped at {offset}")
        else:
            self._report(f"a record larger than the fetch size was skipped ({exc.args[0]})")

    def _report(self, reason: str) -> None:
        if not self._lost and not self._closing:
            self._lost = True
            self.link.lost(reason)

    # -- liveness -----------------------------------------------------------------------------

    async def probe(self) -> None:
        """One metadata round trip to a broker.

        aiokafka never reports a lost broker: it retries quietly. The core bounds this call with
        its probe timeout, so a stopped or frozen broker becomes a reported gap. A blip aiokafka
        bridges between two probes loses nothing: the consumer goes on from its positions.
        """
        try:
            await self.cluster.check()
        except BaseException:
            self._lost = True  # the core reports the loss when this raises or times out
            raise
        # The core only probes once connected and every channel restored: positions nobody took
        # belong to channels that were left during the outage. Starting there later would replay.
        self._restorable.clear()

    # -- errors -------------------------------------------------------------------------------

    def _describe(self, exc: BaseException) -> str:
        return self.config.redact(cluster.describe(exc))

    def _unavailable(self, doing: str, exc: Exception) -> BackboneUnavailable:
        return BackboneUnavailable(f"Could not {doing} {self.where}: {self._describe(exc)}.")

    def _publish_error(self, topic: str, exc: Exception) -> BroadcastError:
        if isinstance(
            exc, kafka_errors.MessageSizeTooLargeError | kafka_errors.RecordTooLargeError
        ):
            return MessageTooLarge(
                f"{self.where} refused a message on {topic!r} as too large "
                f"({self._describe(exc)}); raise the topic's max.message.bytes, or send less."
            )
        if isinstance(exc, kafka_errors.TopicAuthorizationFailedError):
            return BackboneError(
                f"{self.where} does not allow this user to write to {topic!r}: grant WRITE on it."
            )
        return self._unavailable(f"publish to {topic!r} on", exc)


def _decode(record: Any) -> str | bytes:
    value = record.value
    if value is None:  # a tombstone from some other producer
        return ""
    if record.headers:
        for key, _ in record.headers:
            if key == BYTES_HEADER:
                return value  # type: ignore[no-any-return]
    try:
        return value.decode()  # type: ignore[no-any-return]
    except UnicodeDecodeError:
        return value  # type: ignore[no-any-return]


async def _stop_all(producer: Any, consumer: Any) -> None:
    """Stop both clients, waiting at most _STOP_TIMEOUT; what is left finishes in the background.

    Each stop runs in a task of its own, awaited with ``asyncio.wait``, which never raises the
    task's outcome: aiokafka's ``stop()`` can end with a ``CancelledError`` of its own (from an
    inner task it cancelled), which must not pass for a cancellation of the caller.
    """
    stops = {
        _keep(asyncio.ensure_future(stop)) for stop in (_stop_producer(producer), consumer.stop())
    }
    _, pending = await asyncio.wait(stops, timeout=_STOP_TIMEOUT)
    if pending:
        logger.debug("%d Kafka client(s) still closing in the background", len(pending))


async def _stop_producer(producer: Any) -> None:
    """``producer.stop()``, which waits until the queued batches are sent or expire. If the event
    loop ends first (``asyncio.run`` cancels every task left), the sockets are closed at once:
    else they stay open until garbage collected, each with a ``ResourceWarning``."""
    try:
        await producer.stop()
    except asyncio.CancelledError:
        await producer.client.close()
        raise


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


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


def _names(prefix: str) -> TopicNames:
    names = _prefixes.get(prefix)
    if names is None:
        if len(_prefixes) >= 64:
            _prefixes.clear()
        names = _prefixes[prefix] = TopicNames(prefix)
    return names
