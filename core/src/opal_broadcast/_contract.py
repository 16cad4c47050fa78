"""The plugin contract, version 1: what a backbone declares, the connection class it implements,
and the link the core hands that connection. Checked at discovery by :func:`check_declaration`.

Public under :mod:`opal_broadcast.plugin`; ``docs/plugin-authors.md`` is the guide.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._url import BackboneURL

__all__ = [
    "CAPABILITIES",
    "CONTRACT_VERSION",
    "BackboneInfo",
    "Connection",
    "Link",
    "check_declaration",
]

#: The contract version this core implements. A plugin declaring a newer one needs a newer
#: core; one declaring an older major (0: the nine pluggy hooks) runs through an adapter while
#: that version is supported (see the guide's migration section).
CONTRACT_VERSION = 1

#: Optional capabilities the core knows, and what each promises.
CAPABILITIES: Mapping[str, str] = {
    "batch_subscribe": (
        "subscribe()/unsubscribe() take many channels in one backbone command, so the core "
        "restores subscriptions after a reconnect in batches rather than one channel per call"
    ),
}


class Link(Protocol):
    """The connection's way back to the core (given to :meth:`Connection.open`).

    Every method is synchronous and cheap: call them from the connection's reader task or a
    driver callback on the connection's event loop. Calls through the link of a connection the
    core has already dropped (after a loss, or after ``close()``) are ignored.
    """

    #: A dict that survives reconnects of this shared connection, for the plugin's own use
    #: (for example consumer positions to resume from). Empty on the first connect.
    resume_state: dict[str, Any]

    def deliver(self, channel: str, message: str | bytes) -> bool:
        """Hand one message received on ``channel`` to every local subscriber of the channel.

        Returns True when the core took it. False means the core has dropped this connection
        (a loss was reported): the message was not delivered, so a plugin that tracks
        positions must not move past it (it is read again after the reconnect).
        """

    def gap(self, channel: str, reason: str) -> None:
        """Report that messages of ``channel`` were dropped while the connection stays up.

        For example a fragmented message that could not be reassembled. The channel's
        subscribers see a gap; nothing reconnects. If the connection itself is in doubt, call
        :meth:`lost` instead.
        """

    def reject(self, channel: str, reason: str) -> None:
        """Report a payload received on ``channel`` that no publisher of this backbone wrote.

        For input the plugin cannot decode or that breaks its framing (the backbone is shared:
        any client with publish rights can write to a channel). The payload is dropped and
        counted in ``health().rejected``; the core logs it at WARNING, one line per channel and
        interval with a count, never one per payload. Subscribers see nothing: no message of
        theirs was lost. Never drop the connection, or report a gap, for one bad payload.
        """

    def measure(self, name: str, value: float) -> None:
        """Report the current value of one of the backbone's own gauges.

        For what only the server knows and an operator alerts on, for example PostgreSQL's
        notification queue usage (``postgresql.notification_queue.usage``, a fraction).
        ``name`` is lower-case, dotted, and starts with the backbone's name. The latest value
        shows in ``health().measurements`` and, with telemetry on, as the gauge
        ``opal_broadcast.<name>``. Cheap: call it from the probe.
        """

    def lost(self, reason: str | BaseException) -> None:
        """Report that the connection is gone or may have dropped messages.

        The core marks a gap on every channel, closes this connection, and opens a new one with
        backoff, subscribing every channel again. Report it even when the driver reconnected on
        its own: messages sent meanwhile were lost, and subscribers must hear of it.
        """

    def keep_secret(self, secret: str) -> None:
        """Mask ``secret`` in every error and log line the core writes about this connection.

        Call it in :meth:`Connection.open` for credentials that do not sit in the URL's userinfo
        (keyword options, environment variables, files); the URL's own password is masked already.
        """


class Connection(Protocol):
    """One connection to the backbone, shared by every ``Broadcast`` of a URL in one event loop.

    Implement it as a class and name the class in :class:`BackboneInfo`. The core calls
    :meth:`open` to make one, the other methods on the instance, all on the event loop that
    opened it. What may overlap: ``publish`` from many tasks at once, with one ``subscribe`` or
    ``unsubscribe`` call at a time per channel (different channels concurrently), and with
    ``probe``. ``close`` may come at any time, also while other calls are in flight. A driver that
    allows one operation at a time per connection must serialise its own calls.

    Optional: a classmethod ``check_url(url, options)`` that raises ``InvalidURL``/
    ``InvalidOption`` for a URL or options the backbone refuses, without I/O (parse your
    ``Options`` there). ``Broadcast(url)``'s constructor calls it, so a configuration error shows
    where the ``Broadcast`` is made, as broadcaster users expect, not at the first ``connect()``.

    Errors: raise the typed errors of :mod:`opal_broadcast.plugin` (``BackboneUnavailable`` when
    the backbone cannot be reached or the call timed out on the wire, ``AuthenticationFailed``,
    ``AccessDenied``, ``InvalidChannel``, ``MessageTooLarge``/``InvalidMessage``,
    ``InvalidURL``/``InvalidOption``). Anything else is wrapped by the core as a
    ``BackboneError`` with the password masked.
    """

    @classmethod
    async def open(cls, url: BackboneURL, options: Mapping[str, Any], link: Link) -> Connection:
        """Connect and return the connection, ready to publish and subscribe.

        ``url``: the parsed URL (``url.reveal()`` gives the raw text for the driver; never put it
        in an error or log line: ``str(url)`` masks the password). ``options``: the keyword
        options given to ``Broadcast(url, **options)``, to merge with the URL's query options
        (``Options.parse`` does it and refuses unknown ones). ``link``: keep it for the
        connection's life.

        Called once per process, event loop and URL, and again after every loss. Check the URL
        and options before any I/O. The core bounds the call with its connect timeout and may
        cancel it at any await: leave no socket or task behind when cancelled.
        """

    @classmethod
    def check_channel(cls, url: BackboneURL, options: Mapping[str, Any], channel: str) -> None:
        """Raise ``InvalidChannel`` if the backbone cannot carry ``channel``; no I/O.

        Called before a name's first publish or subscribe, even while the backbone is down, so a
        bad name is reported as such rather than as an outage. Names that passed are remembered.
        """

    @classmethod
    def check_message(
        cls, url: BackboneURL, options: Mapping[str, Any], channel: str, message: str | bytes
    ) -> None:
        """Raise ``MessageTooLarge``/``InvalidMessage`` if the backbone cannot carry it; no I/O.

        Called only while the backbone is down, before the core waits for it, so an oversized
        message is refused at once; while connected, :meth:`publish` checks as usual.
        """

    def publish(self, channel: str, message: str | bytes) -> Awaitable[None]:
        """Send ``message`` to every subscriber of ``channel`` in every process.

        Write it as ``async def``, or as a plain ``def`` returning an awaitable (which saves a
        coroutine frame on the hot path when it only hands over to another object's method).

        Check the message against the backbone's limits before any I/O. Return when the backbone
        has accepted the message (its own delivery guarantee applies from there: say which in
        your README). Messages from one publisher are delivered in publish order. The core bounds
        the call with the publish timeout.
        """

    async def subscribe(self, channels: Sequence[str]) -> None:
        """Start receiving every channel in ``channels``; return once all are live.

        Deliver what arrives with ``link.deliver``. Called with one channel for a channel's
        first local subscriber, and with batches after a reconnect (up to 1,000 channels with
        the ``batch_subscribe`` capability, else one). If it raises, the core counts none of
        the channels live and may call again: make it idempotent. Raise ``AccessDenied`` when
        the backbone refuses a channel to these credentials.
        """

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        """Stop receiving ``channels``; every other channel stays subscribed.

        Called when the last local subscriber of a channel leaves. Errors are logged only.
        """

    async def probe(self) -> None:
        """Check that the connection still carries traffic (a PING, ``SELECT 1``).

        Called every ``probe_interval`` seconds while connected, possibly during a publish;
        never during the restore that follows a reconnect (every channel subscribed again first).
        Raising, or not returning within ``probe_timeout``, counts as a loss: this is what finds
        a frozen connection (TCP open, nothing forwarded) that no driver notices. A backbone
        whose driver already detects that may return at once.
        """

    async def close(self) -> None:
        """Close the connection and release everything it holds (sockets, tasks).

        Called when the last ``Broadcast`` on the URL disconnects, and after a loss before
        reconnecting. Must not raise for a connection that is already broken; the core
        time-boxes it and shields it from cancellation.
        """


@dataclass(frozen=True)
class BackboneInfo:
    """What a plugin declares about itself, returned by its ``opal_broadcast_backbone`` hook.

    ``schemes``: the URL schemes it serves (lower case, without ``://``).
    ``contract``: the plugin contract version it implements (:data:`CONTRACT_VERSION`).
    ``connection``: its :class:`Connection` class.
    ``async_libraries``: the async libraries it runs on; ``("asyncio",)`` for a plugin built on
    an asyncio driver (the core raises ``UnsupportedAsyncLibrary`` under any other).
    ``capabilities``: optional capabilities it offers (:data:`CAPABILITIES`); unknown ones are
    ignored with a warning.
    ``summary``: one line for ``opal-broadcast backends``.
    ``distribution``: the package that provides it, named in errors when it was not found
    through an entry point (which knows its distribution anyway).

    A declaration with no ``connection`` is a contract 0 plugin (the nine hooks).
    """

    schemes: tuple[str, ...]
    contract: int = 0
    connection: type[Connection] | None = None
    async_libraries: tuple[str, ...] = ("asyncio", "trio")
    capabilities: frozenset[str] = field(default_factory=frozenset)
    summary: str = ""
    distribution: str | None = None


_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*\Z")
_CLASS_METHODS = {"open": 3, "check_channel": 3, "check_message": 4}
_METHODS = {"publish": 2, "subscribe": 1, "unsubscribe": 1, "probe": 0, "close": 0}
_ASYNC = {"open", "subscribe", "unsubscribe", "probe", "close"}
_ANY = {"publish"}  # async def, or a plain def returning an awaitable


def check_declaration(info: object) -> BackboneInfo:
    """Return ``info`` if it is a valid declaration; raise ``TypeError``/``ValueError`` saying
    what is wrong (before any I/O: at discovery). Contract versions are the registry's business."""
    if not isinstance(info, BackboneInfo):
        raise TypeError(
            f"opal_broadcast_backbone() must return a BackboneInfo, not {type(info).__name__}"
        )
    if isinstance(info.schemes, str) or not info.schemes:
        raise ValueError(
            f"the plugin must declare at least one scheme as a tuple, not {info.schemes!r}"
        )
    for scheme in info.schemes:
        if not isinstance(scheme, str) or not _SCHEME.match(scheme):
            raise ValueError(
                f"{scheme!r} is not a valid URL scheme: lower-case letters, digits, '+', '-' "
                "and '.', starting with a letter, without '://'"
            )
    if len(set(info.schemes)) != len(info.schemes):
        raise ValueError(f"the plugin declares a scheme twice: {info.schemes!r}")
    if isinstance(info.contract, bool) or not isinstance(info.contract, int) or info.contract < 0:
        raise TypeError(f"the contract version must be an integer, not {info.contract!r}")
    if info.contract >= 1:
        if info.connection is None:
            raise TypeError(f"a contract {info.contract} plugin must name its Connection class")
        _check_connection_class(info.connection)
    return info


def _check_connection_class(cls: object) -> None:
    if not inspect.isclass(cls):
        raise TypeError(f"connection must be a class, not {cls!r}")
    name = cls.__qualname__
    problems = []
    for method, arity in {**_CLASS_METHODS, **_METHODS}.items():
        raw = inspect.getattr_static(cls, method, None)
        if raw is None:
            problems.append(f"{method}() is missing")
            continue
        if method in _CLASS_METHODS and not isinstance(raw, (classmethod, staticmethod)):
            problems.append(f"{method}() must be a classmethod")
            continue
        function = getattr(cls, method)
        if method in _ASYNC and not inspect.iscoroutinefunction(function):
            problems.append(f"{method}() must be 'async def'")
        elif method not in _ASYNC | _ANY and inspect.iscoroutinefunction(function):
            problems.append(f"{method}() must be a plain 'def' (no I/O)")
        if not _accepts(function, arity + (method in _METHODS)):
            problems.append(f"{method}() must take {_arguments(method)}")
    if problems:
        raise TypeError(f"connection class {name}: " + "; ".join(problems))


def _accepts(function: Any, count: int) -> bool:
    """Whether ``function`` can be called with ``count`` positional arguments."""
    try:
        inspect.signature(function).bind(*range(count))
    except TypeError:
        return False
    except ValueError:  # no signature (a builtin): trust it
        return True
    return True


def _arguments(method: str) -> str:
    signature = inspect.signature(getattr(Connection, method))
    names = [p for p in signature.parameters if p not in ("self", "cls")]
    return "(" + ", ".join(names) + ")"
