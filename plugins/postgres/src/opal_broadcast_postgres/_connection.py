"""One backbone connection: a dedicated listening session, and the publisher's lanes.

The listening session is a plain asyncpg connection, never a pooled one (asyncpg's pool runs
``UNLISTEN *`` on release, MagicStack/asyncpg#189). asyncpg fires its termination listener when
the session closes under it (the server killed, reset or restarted it, or the connection broke),
and then forgets every LISTEN: that is reported to the core as a loss, and the core reconnects and
subscribes every channel again. asyncpg never notices a frozen session, so the core's probe runs
``SELECT 1`` on this very session, the one whose freezing loses messages.

What arrives on the session is untrusted (any client that can connect can NOTIFY): payloads go
through ``_reassembly``, which drops and reports a bad one without touching other channels. The
one payload it cannot defend against is one the session never survives, so the database's
encoding is checked when the session opens; only those where every NOTIFY payload reaches the
client as valid UTF-8 are accepted (:data:`SAFE_ENCODINGS`), anything else is a
``ConfigurationError`` saying to use a UTF8 database. Why refuse rather than read raw bytes:

* ``SQL_ASCII``: the server checks and converts nothing, so ``pg_notify('c', E'\\xff')`` reaches
  the client as it is. asyncpg decodes every notification as UTF-8 inside its Cython protocol,
  with no hook before the decoding (``_process_notification`` gets the decoded text), and closes
  the connection when that fails: one payload would cost every channel a gap. Reading raw bytes
  would mean parsing PostgreSQL's wire protocol again in Python, in front of asyncpg's.
* Encodings with characters that have no UTF-8 equivalent (``WIN1252``'s byte 0x81,
  ``LATIN3``, ``ISO_8859_7``, the ``EUC_*`` user-defined areas...): the server itself fails to
  convert such a payload for the listening session and ends that session with a FATAL error,
  whatever the client. No client-side code helps there.
* The remedy costs one statement: LISTEN/NOTIFY needs no table, only a database to meet in, so
  every process can point its URL at a UTF8 one
  (``CREATE DATABASE opal_broadcast ENCODING 'UTF8' TEMPLATE template0``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from opal_broadcast import ConfigurationError
from opal_broadcast.plugin import BackboneURL, Link

from ._codec import MARK, Encoder, check_channel
from ._connect import close_quietly, import_asyncpg, open_connection, unavailable
from ._fences.process_notification import listening_class
from ._options import PostgresConfig
from ._publisher import Publisher
from ._reassembly import GRACE, Reassembler

__all__ = ["SAFE_ENCODINGS", "PostgresConnection"]

logger = logging.getLogger("opal_broadcast.postgres")

#: Server encodings in which every NOTIFY payload reaches an asyncpg client as valid UTF-8: UTF8
#: (checked on input) and the single-byte encodings whose every byte has a UTF-8 equivalent
#: (tests/postgres/test_untrusted.py converts each byte on the test server to keep this true).
SAFE_ENCODINGS = frozenset(
    {
        *("UTF8", "LATIN1", "LATIN2", "LATIN4", "LATIN5", "LATIN6", "LATIN7", "LATIN8"),
        *("LATIN9", "LATIN10", "ISO_8859_5", "KOI8R", "KOI8U", "WIN866", "WIN1256"),
    }
)


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
        _check_encoding(config, encoding)
        self._encoder = Encoder(config.max_message_size, unicode=encoding == "UTF8")
        self._reassembler = Reassembler(config.max_message_size, link.reject, link.gap)
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
            self._reassembler.forget(batch)
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
        """``pg_notification_queue_usage()`` on the listening session (reported to the core as
        ``postgresql.notification_queue.usage``: at 1.0 every NOTIFY fails); the core bounds it
        with ``probe_timeout``.

        Its answer comes after every notification the server sent before it, so a partial message
        older than the query (by ``GRACE``) will never complete: it is dropped here.
        """
        self._suspect = True
        sent = time.monotonic()  # no later than the query goes out
        async with self._lock:
            try:
                usage = await self._listener.fetchval("SELECT pg_notification_queue_usage()")
            except self._broken as exc:
                raise unavailable(self.config, exc, "the liveness probe failed") from exc
        self._suspect = False
        self._link.measure("postgresql.notification_queue.usage", float(usage))
        self._reassembler.expire(sent - GRACE)

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
        reassembler = self._reassembler
        if reassembler.partial is None and not payload.startswith(MARK):
            self._deliver(channel, payload)  # the common case: a plain text message
            return
        message = reassembler.feed(channel, pid, payload)
        if message is not None:
            self._deliver(channel, message)

    def _on_termination(self, _connection: Any) -> None:
        self._lost = True
        self._link.lost(
            "the listening session closed (the server terminated, restarted or reset it, or "
            "the connection broke); its LISTENs are gone"
        )


def _check_encoding(config: PostgresConfig, encoding: str) -> None:
    """Refuse a database whose encoding lets one NOTIFY end the listening session."""
    if encoding in SAFE_ENCODINGS:
        return
    url = config.url
    raise ConfigurationError(
        url.redact(
            f"{url}: the database's encoding is {encoding}, in which any client can NOTIFY a "
            "payload that the listening session does not survive (it cannot be read as UTF-8), "
            "so every subscriber would see a gap. LISTEN/NOTIFY needs no table: point every "
            "process's URL at a UTF8 database, e.g. one made with CREATE DATABASE "
            "opal_broadcast ENCODING 'UTF8' TEMPLATE template0."
        )
    )


def _statements(command: str, channels: list[str]) -> str:
    """``LISTEN "a"; LISTEN "b"`` with each name quoted as an identifier (checked: no NUL)."""
    return "; ".join(f'{command} "{channel.replace(chr(34), chr(34) * 2)}"' for channel in channels)
