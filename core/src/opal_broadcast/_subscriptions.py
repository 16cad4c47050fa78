"""Keeping the backbone's subscriptions in step with the local subscribers, without locks.

A channel is subscribed on the backbone once, for its first local subscriber, and unsubscribed
after its last; after a reconnect the supervisor restores every channel that still has
subscribers. At most one backbone (un)subscribe per channel runs at a time (the contract):
whoever starts one marks the channel *busy* with an event that others wait on. Nothing is held
while waiting for the connection, so a ``subscribe()`` arriving during a reconnect and the
restore cannot block each other: the channel becomes live by whichever gets there first. With a
plugin that takes batches, (un)subscribes that arrive together share one plugin call (``_rounds``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from ._channels import Channel
from ._errors import BackboneUnavailable
from ._rounds import Rounds
from ._subscriber import Subscriber

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["Subscriptions"]

logger = logging.getLogger("opal_broadcast")

#: Subscribe calls in flight at once while restoring after a reconnect: with one channel per call,
#: 10,000 channels take a few hundred round trips instead of 10,000; with batches, a few.
RESTORE_CONCURRENCY = 32


class Subscriptions:
    """The backbone side of one hub's channels."""

    __slots__ = ("hub", "new_event", "subscribing", "unsubscribing")

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        #: An event for a channel being (un)subscribed: asyncio's own on asyncio (an
        #: ``anyio.Event`` asks sniffio which library runs, each time it is made).
        self.new_event: Callable[[], asyncio.Event | anyio.Event] = (
            asyncio.Event if hub.loop is not None else anyio.Event
        )
        #: With a plugin that takes batches, (un)subscribes arriving together go in one call.
        self.subscribing = Rounds(self._subscribe_round, self.new_event)
        self.unsubscribing = Rounds(self._unsubscribe_round, self.new_event)

    async def add(self, subscriber: Subscriber[Any], timeout: float) -> None:
        """Attach ``subscriber`` once its channel is live, within ``timeout`` or raise typed.

        Waits for the connection if it is down; a connection that fails to subscribe is reported
        lost (and reconnected) while this call keeps waiting, within its deadline.
        """
        hub, channel = self.hub, subscriber.channel
        entry = hub.channels.entry(channel)
        if entry.live:  # joining a live channel: no I/O, so no deadline to set
            entry.subscribers.add(subscriber)
            return
        entry.pending += 1
        try:
            with hub.publisher.deadlines.bound(timeout):
                while not entry.live:
                    await hub.wait_up()
                    if hub.batch_size > 1:
                        await self.subscribing.join(channel, entry)
                    else:
                        await self._subscribe_once([(channel, entry)], report_loss=True)
                entry.subscribers.add(subscriber)
        except TimeoutError:
            raise BackboneUnavailable(
                hub.unavailable(f"subscribing to {channel!r} timed out after {timeout:g} s")
            ) from None
        except Exception as exc:
            hub.reraise(exc, "subscribing to")
        finally:
            entry.pending -= 1
            hub.channels.forget_if_unused(channel, entry)

    def detach(self, subscriber: Subscriber[Any]) -> None:
        """Stop delivering to ``subscriber`` now (its context exit tidies up the backbone)."""
        entry = self.hub.channels.get(subscriber.channel)
        if entry is not None:
            entry.subscribers.discard(subscriber)

    async def remove(self, subscriber: Subscriber[Any]) -> None:
        """Detach ``subscriber``; unsubscribe the backbone after the channel's last. Never raises."""
        entry = self.hub.channels.get(subscriber.channel)
        if entry is None:
            return
        entry.subscribers.discard(subscriber)
        if not entry.wanted:
            await self._unsubscribe_unwanted(subscriber.channel, entry)

    async def restore(self) -> None:
        """Subscribe again every channel that has subscribers (the supervisor, once up again).

        Channels go in batches of ``hub.batch_size`` (one unless the plugin batches), several
        batches at a time. Raises what the first failing subscribe raised; the supervisor then
        reconnects.
        """
        hub = self.hub
        generation, size = hub.generation, hub.batch_size
        wanted = [(name, entry) for name, entry in hub.channels if entry.wanted]
        batches = iter([wanted[i : i + size] for i in range(0, len(wanted), size)])
        failures: list[Exception] = []

        async def work() -> None:
            for batch in batches:
                if failures or hub.generation != generation:
                    return
                try:
                    with anyio.fail_after(hub.timings.connect_timeout):
                        # Lost again (not up, or a newer connection): the supervisor goes round.
                        while hub.is_up and hub.generation == generation:
                            todo = [(c, e) for c, e in batch if e.wanted and not e.live]
                            if not todo:
                                break
                            await self._subscribe_once(todo, report_loss=False)
                except Exception as exc:
                    failures.append(exc)
                    return
                for channel, entry in batch:
                    if not entry.wanted:  # its last subscriber left meanwhile
                        await self._unsubscribe_unwanted(channel, entry)

        async with anyio.create_task_group() as tasks:
            for _ in range(RESTORE_CONCURRENCY):
                tasks.start_soon(work)
        if failures:
            raise failures[0]

    async def _subscribe_once(
        self, channels: list[tuple[str, Channel]], *, report_loss: bool
    ) -> None:
        """One try at making ``channels`` live on the current connection, in one plugin call.

        Channels another call is already (un)subscribing are left to it and waited for; the
        caller loops until every channel is live. With ``report_loss``, a subscribe that fails
        for want of the backbone reports the connection lost and returns (the caller waits for
        the reconnect); anything else is raised.
        """
        hub = self.hub
        others = [entry.busy for _, entry in channels if entry.busy is not None]
        mine = [(name, entry) for name, entry in channels if entry.busy is None]
        if mine:
            generation, link = hub.generation, hub.link
            done = self.new_event()
            for _, entry in mine:
                entry.busy = done
            try:
                await hub.connection.subscribe([name for name, _ in mine])
            except Exception as exc:
                if not (report_loss and _unavailable(exc)) or link is None:
                    raise
                hub.lost(link, exc)
                return
            finally:
                for _, entry in mine:
                    entry.busy = None
                done.set()
            # A loss while subscribing leaves the new connection unsubscribed.
            live = generation == hub.generation and hub.is_up
            for _, entry in mine:
                entry.live = live
        for busy in others:
            await busy.wait()

    async def _unsubscribe_unwanted(self, channel: str, entry: Channel) -> None:
        hub = self.hub
        with anyio.CancelScope(shield=True), anyio.move_on_after(hub.timings.close_timeout):
            while entry.busy is not None:
                await entry.busy.wait()
            if entry.live and not entry.wanted and hub.is_up:
                entry.live = False
                entry.busy = done = self.new_event()
                try:
                    if hub.batch_size > 1:
                        await self.unsubscribing.join(channel, entry)
                    else:
                        await self._unsubscribe(hub.connection, [channel])
                finally:
                    entry.busy = None
                    done.set()
        hub.channels.forget_if_unused(channel, entry)

    async def _subscribe_round(self, items: list[tuple[str, Channel]]) -> dict[str, Exception]:
        """Subscribe a round's channels in batches; a failed batch is tried again channel by
        channel, so a channel the backbone refuses (access control) fails alone."""
        hub = self.hub
        todo = [(name, entry) for name, entry in items if entry.wanted and not entry.live]
        failures: dict[str, Exception] = {}
        for start in range(0, len(todo), hub.batch_size):
            if not hub.is_up:  # lost meanwhile: the callers wait for the reconnect and go again
                break
            batch = todo[start : start + hub.batch_size]
            try:
                await self._subscribe_once(batch, report_loss=True)
            except Exception as exc:
                if len(batch) == 1:
                    failures[batch[0][0]] = exc
                    continue
                for name, entry in batch:
                    try:
                        await self._subscribe_once([(name, entry)], report_loss=True)
                    except Exception as one:
                        failures[name] = one
        for name, entry in todo:  # every caller of this channel left while it was subscribed
            if entry.live and not entry.wanted:
                await self._unsubscribe_unwanted(name, entry)
        return failures

    async def _unsubscribe_round(self, items: list[tuple[str, Channel]]) -> dict[str, Exception]:
        names, size, connection = (
            [name for name, _ in items],
            self.hub.batch_size,
            self.hub.connection,
        )
        for start in range(0, len(names), size):
            await self._unsubscribe(connection, names[start : start + size])
        return {}

    @staticmethod
    async def _unsubscribe(connection: Any, channels: list[str]) -> None:
        try:
            await connection.unsubscribe(channels)
        except Exception as exc:
            logger.debug("unsubscribing %d channel(s) failed (ignored): %s", len(channels), exc)


def _unavailable(exc: Exception) -> bool:
    return isinstance(exc, (BackboneUnavailable, OSError, TimeoutError))
