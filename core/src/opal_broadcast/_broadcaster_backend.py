"""Backends written for encode/broadcaster, run through the core unchanged.

A broadcaster backend is an object with six coroutine methods: ``connect()``, ``disconnect()``,
``subscribe(channel)``, ``unsubscribe(channel)``, ``publish(channel, message)`` and
``next_published()``, which returns the next event (anything with ``.channel`` and
``.message``). ``Broadcast(backend=obj)`` (with or without a URL) wraps such an object in a
:class:`~opal_broadcast.plugin.Connection`, so the core's shared fan-out, bounded queues, gap
reporting and reconnection apply to it as to any plugin:

- one reader task awaits ``next_published()`` and hands each event to the local subscribers;
- ``next_published()`` raising is a loss: every subscriber has a gap, the core calls
  ``disconnect()`` and then ``connect()`` again with backoff, and subscribes every channel again
  (a backend that cannot connect twice fails loudly there, never silently);
- broadcaster's own backends never raise there: a broken connection leaves them deaf. So the probe
  sends a token through the backend on a channel of its own
  (``opal_broadcast_probe_<hex>``) and waits for it to come back through ``next_published()``: a
  backend that went deaf fails the probe within ``probe_timeout`` and is reconnected;
- every ``Broadcast`` given the same object shares one connection, as for a URL;
- calls into the backend are made one at a time (broadcaster's Postgres backend runs every
  command on one asyncpg connection, which refuses a second operation while one is in progress).

Nothing needs subclassing: :class:`BroadcastBackend` is only there for code that subclasses
broadcaster's base class by name. To ship a backend class as the plugin of a scheme, return
``broadcaster_backend_info(MyBackend, "myscheme")`` from the plugin's ``opal_broadcast_backbone``
hook: each connection then makes its own ``MyBackend(url)``, as broadcaster did (see the guide's
section "Shipping an encode/broadcaster backend").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from ._contract import CONTRACT_VERSION, BackboneInfo, Link
from ._errors import BackboneUnavailable, InvalidOption
from ._url import BackboneURL

__all__ = ["BroadcastBackend", "broadcaster_backend_info", "is_broadcaster_backend"]

#: What makes an object a broadcaster backend.
METHODS = ("connect", "disconnect", "subscribe", "unsubscribe", "publish", "next_published")


class BroadcastBackend:
    """encode/broadcaster's backend base class, by the same name (subclassing it is optional).

    Implement every method as ``async def``; ``next_published`` returns an event with
    ``.channel`` and ``.message`` (an :class:`~opal_broadcast.Event` will do).
    """

    def __init__(self, url: str) -> None:
        raise NotImplementedError

    async def connect(self) -> None:
        raise NotImplementedError

    async def disconnect(self) -> None:
        raise NotImplementedError

    async def subscribe(self, channel: str) -> None:
        raise NotImplementedError

    async def unsubscribe(self, channel: str) -> None:
        raise NotImplementedError

    async def publish(self, channel: str, message: Any) -> None:
        raise NotImplementedError

    async def next_published(self) -> Any:
        raise NotImplementedError


def is_broadcaster_backend(candidate: object) -> bool:
    """Whether ``candidate`` is an object with broadcaster's backend interface (not a class)."""
    return not isinstance(candidate, type) and all(
        callable(getattr(candidate, name, None)) for name in METHODS
    )


def broadcaster_backend_info(backend: Callable[[str], Any] | object, *schemes: str) -> BackboneInfo:
    """The declaration that serves a broadcaster backend as a plugin.

    ``backend``: a backend class (or any callable taking the URL and returning a backend object),
    called once per connection with the URL, password included; or one backend object, used by
    every connection (what ``Broadcast(backend=obj)`` does, with no scheme). ``schemes``: the URL
    schemes it serves.
    """
    if is_broadcaster_backend(backend):
        make: Callable[[str], Any] = lambda url: backend  # noqa: E731 - one object for all
        name = type(backend).__name__
    else:
        make = backend  # type: ignore[assignment]
        name = getattr(backend, "__name__", type(backend).__name__)
    connection = type(
        f"{name}Connection", (BackendConnection,), {"make_backend": staticmethod(make)}
    )
    return BackboneInfo(
        schemes=schemes or ("backend",),
        contract=CONTRACT_VERSION,
        connection=connection,
        async_libraries=("asyncio",),
        summary=f"the encode/broadcaster backend {name}",
    )


class BackendConnection:
    """The connection to a broadcaster backend (a subclass per backend sets ``make_backend``)."""

    #: Makes the backend object of a connection from the URL (password included).
    make_backend: ClassVar[Callable[[str], Any]]

    def __init__(self, link: Link, backend: Any) -> None:
        self.link = link
        self.backend = backend
        self.reader: asyncio.Task[None] | None = None
        #: The probe's own channel, and the probes waiting for their token to come back.
        self.probe_channel = f"opal_broadcast_probe_{uuid.uuid4().hex}"
        self.probes: dict[str, asyncio.Future[None]] = {}
        self.tokens = itertools.count()
        #: Held across each call into the backend (see the module docstring).
        self.calls = asyncio.Lock()

    @classmethod
    async def open(
        cls, url: BackboneURL, options: Mapping[str, Any], link: Link
    ) -> BackendConnection:
        cls.check_url(url, options)
        backend = cls.make_backend(url.reveal())
        await backend.connect()
        connection = cls(link, backend)
        connection.reader = asyncio.get_running_loop().create_task(connection.read())
        try:
            await connection.subscribe([connection.probe_channel])
        except BaseException:
            await connection.close()
            raise
        return connection

    @classmethod
    def check_url(cls, url: BackboneURL, options: Mapping[str, Any]) -> None:
        """A broadcaster backend is configured by its URL and constructor, never by options."""
        if options:
            raise InvalidOption(
                f"The encode/broadcaster backend of {url.scheme}:// takes no keyword options "
                f"(got {', '.join(sorted(options))}): configure the backend object itself."
            )

    @classmethod
    def check_channel(cls, url: BackboneURL, options: Mapping[str, Any], channel: str) -> None:
        """The backend's own ``subscribe``/``publish`` refuse what it cannot carry."""

    @classmethod
    def check_message(
        cls, url: BackboneURL, options: Mapping[str, Any], channel: str, message: str | bytes
    ) -> None:
        """The backend's own ``publish`` refuses what it cannot carry."""

    async def read(self) -> None:
        """Hand every published event to the core until ``next_published()`` fails."""
        deliver = self.link.deliver
        next_published = self.backend.next_published
        probe_channel = self.probe_channel
        try:
            while True:
                event = await next_published()
                if event.channel == probe_channel:
                    waiter = self.probes.get(event.message)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                    continue
                deliver(event.channel, event.message)
        except Exception as exc:  # the backend's way of saying its connection broke
            self.link.lost(f"the backend's next_published() raised {type(exc).__name__}: {exc}")

    async def publish(self, channel: str, message: str | bytes) -> None:
        async with self.calls:
            await self.backend.publish(channel, message)

    async def subscribe(self, channels: Sequence[str]) -> None:
        for channel in channels:
            async with self.calls:
                await self.backend.subscribe(channel)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        for channel in channels:
            async with self.calls:
                await self.backend.unsubscribe(channel)

    async def probe(self) -> None:
        """A token sent through the backend must come back through ``next_published()``."""
        if self.reader is None or self.reader.done():
            raise BackboneUnavailable("the backend's next_published() loop has ended")
        token = f"probe-{next(self.tokens)}"
        waiter = self.probes[token] = asyncio.get_running_loop().create_future()
        try:
            await self.publish(self.probe_channel, token)
            await waiter  # the core's probe_timeout bounds this: a deaf backend never answers
        finally:
            del self.probes[token]

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.wait([self.reader])  # never raises: the reader ends on its own cancel
        # The connection may be broken (then disconnect() is what matters), so briefly.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.unsubscribe([self.probe_channel]), 0.5)
        await self.backend.disconnect()
