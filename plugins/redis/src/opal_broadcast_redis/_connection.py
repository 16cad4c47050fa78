"""The plugin's handle for one shared backbone connection: a publishing wire and a pub/sub wire.

The plugin speaks RESP2 itself (:mod:`._handshake` opens and authenticates each connection: TCP,
TLS with certificate checks, or a unix socket, then ``AUTH``, ``CLIENT SETNAME``, ``SELECT``), with
hiredis's parser when it is installed. No client library's logic runs on these connections, which
is what keeps every loss visible: redis-py's pub/sub, for one, reconnects and resubscribes on its
own, retries commands, and loses the messages in between without a word. Here a broken pub/sub
wire is reported through ``link.lost`` and the core reconnects, restores the channels and reports
the gap.

Two connections because a subscribed RESP2 connection can only (un)subscribe and ping. Losing
the publishing one loses nothing a subscriber was due, so it is no loss of the connection: the
pub/sub wire keeps delivering, and the next publish opens a new publishing wire (within its own
deadline; one publish opens it while the others wait). A publish in flight on the broken wire fails
with ``BackboneUnavailable``: it may or may not have reached Redis, so it is never sent again here.
The liveness probe pings both: a frozen pub/sub connection (TCP open, nothing forwarded) is the one
that would otherwise lose messages silently, and a frozen publishing one would make every publish
time out. A publishing wire that broke is not pinged: the next publish replaces it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opal_broadcast.plugin import (
    AuthenticationFailed,
    BackboneUnavailable,
    BackboneURL,
    InvalidChannel,
    InvalidMessage,
    Link,
    MessageTooLarge,
)

from ._decode import CHECK_FROM, text_or_bytes
from ._errors import check_reply
from ._handshake import open_wire
from ._options import RedisConfig
from ._resp import Reply, command, publish_command
from ._wire import Wire

__all__ = ["MAX_MESSAGE_BYTES", "RedisConnection"]

#: Redis's default ``proto-max-bulk-len``: the largest string a server accepts.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024

_PING = command(b"PING")


class RedisConnection:
    """Both wires of one backbone connection, and the channel names subscribed on it."""

    def __init__(self, config: RedisConfig, link: Link) -> None:
        self.config = config
        self._link = link
        if config.password:  # from an option or the environment: the core masks it too
            link.keep_secret(config.password)
        self._deliver = link.deliver
        self._decode = config.decode_messages
        self._names: dict[bytes, str] = {}
        self._lost: str | None = None
        self._closed = False
        self._publisher: Wire | None = None
        self._subscriber: Wire | None = None
        self._reopening = asyncio.Lock()  # held by the publish that replaces a broken publisher

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, url: BackboneURL, options: Mapping[str, Any], link: Link
    ) -> RedisConnection:
        """Check the URL and options, then connect both wires (see :meth:`_connect`)."""
        config = RedisConfig.parse(url, options)
        connection = cls(config, link)
        await connection._connect()
        return connection

    @classmethod
    def check_url(cls, url: BackboneURL, options: Mapping[str, Any]) -> None:
        """Refuse a bad URL or option where the ``Broadcast`` is made (no I/O)."""
        RedisConfig.parse(url, options)

    @classmethod
    def check_channel(cls, url: BackboneURL, options: Mapping[str, Any], channel: str) -> None:
        """Any text Redis can carry: names are encoded as UTF-8 (see :func:`_channel_bytes`)."""
        _channel_bytes(channel)

    @classmethod
    def check_message(
        cls, url: BackboneURL, options: Mapping[str, Any], channel: str, message: str | bytes
    ) -> None:
        """Within ``proto-max-bulk-len``; text must be valid Unicode."""
        _payload(message)

    async def _connect(self) -> None:
        """Connect both wires, check each answers a PING, or raise a typed error."""
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self._open_wire("publishing", _no_loss)),
            loop.create_task(self._open_wire("pub/sub", self._on_lost, self._on_message)),
        ]
        try:
            await asyncio.wait(tasks)
        except BaseException:  # cancelled (the core's connect timeout): leave nothing open
            for task in tasks:
                task.cancel()
                task.add_done_callback(_close_opened)
            raise
        failures = [error for error in (task.exception() for task in tasks) if error is not None]
        if failures:
            for task in tasks:
                _close_opened(task)
            # An authentication error says more than the other connection's side effect of it.
            failures.sort(key=lambda error: not isinstance(error, AuthenticationFailed))
            raise failures[0]
        self._publisher, self._subscriber = (task.result() for task in tasks)
        if self._lost is not None:
            # The core ignores a loss reported before connect() returns: say it here.
            self._abort()
            raise BackboneUnavailable(f"{self.config.url} closed the connection: {self._lost}.")

    async def _open_wire(
        self,
        label: str,
        on_lost: Callable[[str], None],
        on_message: Callable[[bytes, bytes], None] | None = None,
    ) -> Wire:
        return await open_wire(self.config, label, on_lost, on_message)

    async def close(self) -> None:
        """Close both wires now (see :meth:`_abort`)."""
        self._abort()

    def _abort(self) -> None:
        """Close both wires now (abort: no round trip, nothing to wait for)."""
        self._closed = True
        for wire in (self._publisher, self._subscriber):
            if wire is not None:
                wire.close()
        self._names.clear()

    def _on_lost(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
            self._link.lost(self.config.redact(reason))

    # -- messages ---------------------------------------------------------------------------

    async def publish(self, channel: str, message: str | bytes) -> None:
        """PUBLISH, pipelined with concurrent ones; returns once Redis has answered."""
        name = _channel_bytes(channel)
        payload = _payload(message)
        wire = self._publisher
        assert wire is not None
        if not wire.writable:  # its send buffer is full, or it broke
            wire = await self._ready_publisher(wire)
        reply = await wire.request(publish_command(name, payload))
        if type(reply) is not int:
            check_reply(self.config, reply, "PUBLISH")

    async def _ready_publisher(self, wire: Wire) -> Wire:
        """``wire`` once its send buffer has drained; a new publishing wire if it broke.

        Cancellation-safe (the core's publish deadline cancels this): a wire half opened is
        closed, and the next publish tries again.
        """
        await wire.wait_writable()
        if wire.broken is None:
            return wire
        async with self._reopening:
            if self._publisher is wire:  # not yet replaced by a publish that came first
                if self._closed:
                    raise BackboneUnavailable(f"The connection to {self.config.url} is closed.")
                new = await self._open_wire("publishing", _no_loss)
                if self._closed:  # closed while opening: keep nothing open
                    new.close()
                    raise BackboneUnavailable(f"The connection to {self.config.url} is closed.")
                self._publisher = new
        assert self._publisher is not None
        return self._publisher

    async def subscribe(self, channels: Sequence[str]) -> None:
        """One SUBSCRIBE for every channel; returns when Redis has confirmed it, so a later
        PUBLISH reaches us."""
        names = [_channel_bytes(channel) for channel in channels]
        wire = self._subscriber
        assert wire is not None
        self._names.update(zip(names, channels, strict=True))
        try:
            reply = await wire.request(command(b"SUBSCRIBE", *names), replies=len(names))
            check_reply(self.config, reply, "SUBSCRIBE")
        except BaseException:
            for name in names:
                self._names.pop(name, None)
            if wire.broken is None:
                # Cancelled midway: Redis may have subscribed already. Undo it (in order on the
                # wire, before any later SUBSCRIBE of the channels); nobody waits for the answer.
                undo = wire.request(command(b"UNSUBSCRIBE", *names), replies=len(names))
                undo.add_done_callback(_ignore)
            raise

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        """One UNSUBSCRIBE; messages already on their way for the channels are dropped."""
        names = [_channel_bytes(channel) for channel in channels]
        wire = self._subscriber
        assert wire is not None
        for name in names:
            self._names.pop(name, None)
        if wire.broken is None:
            reply = await wire.request(command(b"UNSUBSCRIBE", *names), replies=len(names))
            check_reply(self.config, reply, "UNSUBSCRIBE")

    async def probe(self) -> None:
        """PING both wires; the core's deadline turns a frozen one into a loss.

        A broken publishing wire is no loss (see the module docstring), before or during the PING.
        """
        publisher = self._publisher
        assert publisher is not None
        assert self._subscriber is not None
        first = publisher.request(_PING) if publisher.broken is None else None
        second = self._subscriber.request(_PING)
        check_reply(self.config, await second, "PING")
        if first is not None:
            try:
                reply = await first
            except BackboneUnavailable:
                return  # the publishing wire broke meanwhile: the next publish replaces it
            check_reply(self.config, reply, "PING")

    def _on_message(self, channel: bytes, data: bytes) -> None:
        name = self._names.get(channel)
        if name is None:
            return  # unsubscribed while the message was on its way
        if self._decode:
            if len(data) < CHECK_FROM:
                try:
                    message: str | bytes = data.decode()
                except UnicodeDecodeError:
                    message = data
            else:  # a failed decode() would copy all of it: see _decode
                message = text_or_bytes(data)
            self._deliver(name, message)
        else:
            self._deliver(name, data)


def _no_loss(_reason: str) -> None:
    """A broken publishing wire is replaced by the next publish; nobody needs to hear of it."""


def _ignore(future: asyncio.Future[Reply]) -> None:
    if not future.cancelled():
        future.exception()


def _close_opened(task: asyncio.Task[Wire]) -> None:
    if task.done() and not task.cancelled() and task.exception() is None:
        task.result().close()


def _payload(message: str | bytes) -> bytes:
    """The bytes to PUBLISH, or ``InvalidMessage``/``MessageTooLarge``."""
    if type(message) is str:
        try:
            payload = message.encode()
        except UnicodeEncodeError as exc:
            raise InvalidMessage(f"The message is not valid Unicode text: {exc}.") from None
    else:
        payload = message  # type: ignore[assignment]  # bytes (checked by the core)
    if len(payload) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(
            f"The message has {len(payload)} bytes; Redis accepts at most "
            f"{MAX_MESSAGE_BYTES} (proto-max-bulk-len). Send a reference to the data instead."
        )
    return payload


def _channel_bytes(channel: str) -> bytes:
    try:
        return channel.encode()
    except UnicodeEncodeError as exc:
        raise InvalidChannel(f"The channel name is not valid Unicode text: {exc}.") from None
