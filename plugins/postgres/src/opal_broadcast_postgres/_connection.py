"""One backbone connection: a dedicated listening session, and the publisher's lanes.

The listening session is a plain asyncpg connection, never a pooled one (asyncpg's pool runs
``UNLISTEN *`` on release, MagicStack/asyncpg#189). asyncpg fires its termination listener when
the server kills, resets or restarts the session, and then forgets every LISTEN: that is reported
to the core as a loss, and the core reconnects and subscribes every channel again. asyncpg never
notices a frozen session, so the core's probe runs ``SELECT 1`` on this very session, the one
whose freezing loses messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from opal_broadcast.plugin import BackboneURL, Link

from ._codec import MARK, Encoder, Reassembler, check_channel
from ._connect import close_quietly, import_asyncpg, open_connection, unavailable
from ._fences.process_notification import listening_class
from ._options import PostgresConfig
from ._publisher import Publisher

__all__ = ["PostgresConnection"]

logger = logging.getLogger("opal_broadcast.postgres")

#: Server encodings whose bytes are the client's UTF-8 bytes (no conversion, same lengths).
_UNICODE_ENCODINGS = ("UTF8", "SQL_ASCII")


class PostgresConnection:
    """The plugin's handle for one shared backbone connection (see the module docstring)."""

    def __init__(self, config: PostgresConfig, link: Link, listener: Any) -> None:
        self.config = config
        self._link = link
        self._deliver = link.deliver
        self._listener = listener
        # asyncpg runs one operation at a time per connection: LISTEN, UNLISTEN and the probe
        # take turns (they would otherwise fail with "another operation is in progress").
        self._lock = asyncio.Lock()
        encoding = listener.get_settings().server_encoding
        self._encoder = Encoder(config.max_message_size, unicode=encoding in _UNICODE_ENCODINGS)
        self._reassembler = Reassembler(config.max_message_size)
        #: Publishes; the publish hook calls it directly.
        self.publisher = Publisher(config, self._encoder)
        asyncpg = import_asyncpg()
        self._broken = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)
        self._lost = False
        self._suspect = False  # a probe is under way (if the core gives up on it, it froze)
        #: Channels LISTENed to on the session (the core sends the subscribes that arrive
        #: together in one call, so one round trip LISTENs to all of them).
        self._listening: set[str] = set()
        #: The listening class's own set of channels when batching (None: add_listener is used,
        #: see ``_fences.process_notification``).
        self._channels: set[str] | None = getattr(listener, "opal_channels", None)
        listener.add_termination_listener(self._on_termination)

    @classmethod
    async def open(
        cls, url: BackboneURL, options: Mapping[str, Any], link: Link
    ) -> PostgresConnection:
        """Connect the listening session (publishing lanes open on first use)."""
        config = PostgresConfig.parse(url, options)
        listener = await open_connection(
            config, "listen", statement_cache_size=0, connection_class=listening_class()
        )
        try:
            connection = cls(config, link, listener)
        except BaseException:
            listener.terminate()
            raise
        if connection._channels is not None:  # the override delivers to it directly
            listener.opal_notify = connection._receive
        return connection

    @classmethod
    def check_url(cls, url: BackboneURL, options: Mapping[str, Any]) -> None:
        """Refuse a bad URL or option where the ``Broadcast`` is made (no I/O)."""
        PostgresConfig.parse(url, options)

    @classmethod
    def check_channel(cls, url: BackboneURL, options: Mapping[str, Any], channel: str) -> None:
        """A name PostgreSQL takes as an identifier (see ``_codec.check_channel``)."""
        check_channel(channel)

    @classmethod
    def check_message(
        cls, url: BackboneURL, options: Mapping[str, Any], channel: str, message: str | bytes
    ) -> None:
        """Within ``max_message_size``: only called while the server is unreachable."""
        Encoder(PostgresConfig.parse(url, options).max_message_size).encode(message)

    # -- the contract -----------------------------------------------------------------------

    def publish(self, channel: str, message: str | bytes) -> Awaitable[None]:
        # Not ``async def``: the hot path saves a coroutine frame. The channel was checked already.
        return self.publisher.publish(channel, message)

    async def subscribe(self, channels: Sequence[str]) -> None:
        """LISTEN on each channel, in one multi-statement round trip
        (``LISTEN "a"; LISTEN "b"; ...``); live once this returns."""
        async with self._lock:
            batch = set(channels) - self._listening
            if not batch:
                return
            try:
                await self._listen(sorted(batch))
            except self._broken as exc:
                raise unavailable(self.config, exc, "LISTEN failed") from exc
            self._listening.update(batch)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        """UNLISTEN each channel, in one round trip."""
        async with self._lock:
            batch = sorted(self._listening.intersection(channels))
            self._listening.difference_update(batch)
            if self._channels is not None:
                self._channels.difference_update(batch)
            if not batch:
                return
            try:
                if self._channels is not None:
                    await self._listener.execute(_statements("UNLISTEN", batch))
                else:
                    for channel in batch:
                        await self._listener.remove_listener(channel, self._on_notification)
            except self._broken as exc:
                raise unavailable(self.config, exc, "UNLISTEN failed") from exc

    async def _listen(self, batch: list[str]) -> None:
        channels = self._channels
        if channels is None:  # the public path (see _fences.process_notification)
            for channel in batch:
                await self._listener.add_listener(channel, self._on_notification)
            return
        channels.update(batch)  # before the round trip: a notification may follow it at once
        try:
            await self._listener.execute(_statements("LISTEN", batch))
        except BaseException:
            channels.difference_update(batch)
            raise

    async def probe(self) -> None:
        """``SELECT 1`` on the listening session; the core bounds it with ``probe_timeout``."""
        self._suspect = True
        async with self._lock:
            try:
                await self._listener.execute("SELECT 1")
            except self._broken as exc:
                raise unavailable(self.config, exc, "the liveness probe failed") from exc
        self._suspect = False

    async def close(self) -> None:
        """Close everything; politely unless the session was lost or froze. Never raises."""
        listener = self._listener
        listener.remove_termination_listener(self._on_termination)
        graceful = not (self._lost or self._suspect or listener.is_closed())
        closing = [self.publisher.close(graceful=graceful)]
        if graceful:
            closing.append(close_quietly(listener))
        else:
            listener.terminate()
        await asyncio.gather(*closing, return_exceptions=True)

    # -- callbacks from asyncpg ---------------------------------------------------------------

    def _on_notification(self, _connection: Any, pid: int, channel: str, payload: str) -> None:
        self._receive(pid, channel, payload)

    def _receive(self, pid: int, channel: str, payload: str) -> None:
        if not payload.startswith(MARK):
            self._deliver(channel, payload)  # the common case: a plain text message
            return
        message = self._reassembler.feed(channel, pid, payload)
        if message is not None:
            self._deliver(channel, message)

    def _on_termination(self, _connection: Any) -> None:
        self._lost = True
        self._link.lost(
            "the server closed the listening session (terminated, restarted or reset); "
            "its LISTENs are gone"
        )


def _statements(command: str, channels: list[str]) -> str:
    """``LISTEN "a"; LISTEN "b"`` with each name quoted as an identifier (checked: no NUL)."""
    return "; ".join(f'{command} "{channel.replace(chr(34), chr(34) * 2)}"' for channel in channels)
