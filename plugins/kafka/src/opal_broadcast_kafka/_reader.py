"""The reader task: hands every fetched record to the core, in partition order, and moves each
partition's position past what it delivered. Positions the brokers no longer have, and records
too large to fetch, become gaps on their channel; any other consumer failure is a loss.
"""

from __future__ import annotations

import asyncio
from typing import Any

from opal_broadcast.plugin import Link

from ._driver import kafka_errors
from ._errors import Errors
from ._messages import decode
from ._subscriptions import Subscriptions

__all__ = ["Reader"]

#: How long one ``getmany`` waits before the reader loops (it returns as soon as records come).
_READ_WAIT_MS = 10_000


class Reader:
    def __init__(
        self, consumer: Any, link: Link, subscriptions: Subscriptions, errors: Errors
    ) -> None:
        self.consumer = consumer
        self.link = link
        self.subscriptions = subscriptions
        self.errors = errors
        #: The core no longer counts on this connection (it was told of a loss, a probe failed,
        #: or it is closing): deliver no more and leave the positions as they are.
        self.halted = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._read())

    def halt(self) -> None:
        self.halted = True

    async def stop(self) -> None:
        """Halt, and wait until the task has ended."""
        self.halted = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _report(self, reason: str) -> None:
        """Tell the core the connection is lost (once, and not while closing)."""
        if not self.halted:
            self.halted = True
            self.link.lost(reason)

    async def _read(self) -> None:
        consumer = self.consumer
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=_READ_WAIT_MS)
            except Exception as exc:
                if await self._recover(exc):
                    continue
                return
            if self.halted:
                return
            for tp, records in batches.items():
                if not self._deliver(tp, records):
                    return

    def _deliver(self, tp: Any, records: list[Any]) -> bool:
        """Deliver one partition's records from its position; False once the core dropped this
        connection (the record it refused is where the next connection resumes)."""
        subscriptions = self.subscriptions
        channel = subscriptions.channels.get(tp.topic)
        positions = subscriptions.positions
        start = positions.get(tp)
        if channel is None or start is None:
            return True
        if records[0].offset < start:
            records = [record for record in records if record.offset >= start]
            if not records:
                return True
        deliver = self.link.deliver
        for record in records:
            value = record.value
            if record.headers or value is None:
                message = decode(record)
            else:
                try:  # the common case inline: this loop runs once per message
                    message = value.decode()
                except UnicodeDecodeError:
                    message = value
            if not deliver(channel, message):
                positions[tp] = record.offset
                return False
        positions[tp] = records[-1].offset + 1
        return True

    async def _recover(self, exc: Exception) -> bool:
        """Whether reading goes on after ``getmany`` raised ``exc``."""
        if isinstance(exc, kafka_errors.ConsumerStoppedError):
            return False
        if isinstance(exc, kafka_errors.OffsetOutOfRangeError):
            return await self._out_of_range(exc)
        if isinstance(exc, kafka_errors.RecordTooLargeError):
            self._skip_too_large(exc)
            return True
        self._report(f"the consumer failed ({self.errors.describe(exc)})")
        return False

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
        if self.halted:
            return False
        channels, positions = self.subscriptions.channels, self.subscriptions.positions
        for tp in partitions:
            channel = channels.get(tp.topic)
            if tp not in positions or channel is None:
                continue
            kept = positions[tp]
            positions[tp] = min(max(kept, first[tp]), last[tp])
            self.consumer.seek(tp, positions[tp])
            self.link.gap(
                channel,
                f"offset {kept} of {tp.topic}[{tp.partition}] no longer exists (deleted by "
                f"retention or lost by the brokers); resumed at {positions[tp]}",
            )
        return True

    def _skip_too_large(self, exc: Exception) -> None:
        # Only brokers older than 0.10.1 send this (newer ones return an oversized batch whole);
        # aiokafka has stepped past the record already.
        tp, offset = (exc.args[1], exc.args[2]) if len(exc.args) >= 3 else (None, None)
        channel = self.subscriptions.channels.get(getattr(tp, "topic", ""))
        if tp in self.subscriptions.positions and isinstance(offset, int) and channel is not None:
            self.subscriptions.positions[tp] = offset + 1
            self.link.gap(channel, f"a record larger than the fetch size was skipped at {offset}")
        else:
            self._report(f"a record larger than the fetch size was skipped ({exc.args[0]})")
