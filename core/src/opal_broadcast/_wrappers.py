"""Hook wrappers around the core's own calls: connecting, publishing, entering a subscription.

pluggy's second job here, beside discovering backbones: a package that observes or polices what
the core does, on every backbone (a tracer, a metrics exporter, an audit log), implements the
hooks below as pluggy *wrappers* (``@hookimpl(wrapper=True)``). The core's own implementation is
the innermost one and returns the awaitable that does the work; each wrapper receives it from its
``yield`` and returns it, or an awaitable of its own around it::

    from opal_broadcast.plugin import hookimpl

    class PublishTimer:
        @hookimpl(wrapper=True)
        def opal_broadcast_around_publish(self, url, channel):
            started = time.perf_counter()
            publishing = yield

            async def timed():
                try:
                    await publishing
                finally:
                    histogram.record(time.perf_counter() - started, {"channel": channel})

            return timed()

Register it with :func:`register_wrappers`, or declare it under the ``opal_broadcast.wrappers``
entry point group to have it loaded when the first connection opens. A hook implementation that
is not a wrapper is refused: the core's is the only one that does the work. With no wrapper
registered a call costs one attribute check (publish keeps its fast path).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

import pluggy

from ._hookspecs import PROJECT, hookimpl, hookspec
from ._url import BackboneURL

__all__ = ["ENTRY_POINT_GROUP", "register_wrappers", "unregister_wrappers", "wrappers"]

logger = logging.getLogger("opal_broadcast")

ENTRY_POINT_GROUP = "opal_broadcast.wrappers"


class _Specs:
    """The core's calls a wrapper may go around (arguments by name: take only those you need)."""

    @hookspec(firstresult=True)
    def opal_broadcast_around_connect(  # type: ignore[empty-body]
        self, url: BackboneURL, attempt: Callable[[], Awaitable[None]]
    ) -> Awaitable[None]:
        """Around each attempt to open a connection: the first, and each after a loss.

        ``url`` masks its password when shown. The awaitable raises the typed error of a failed
        attempt (the core retries after a loss with backoff).
        """

    @hookspec(firstresult=True)
    def opal_broadcast_around_publish(  # type: ignore[empty-body]
        self,
        url: BackboneURL,
        channel: str,
        message: str | bytes,
        attempt: Callable[[], Awaitable[None]],
    ) -> Awaitable[None]:
        """Around each ``Broadcast.publish`` whose channel and message passed the checks.

        The awaitable returns once the backbone accepted the message, or raises typed.
        """

    @hookspec(firstresult=True)
    def opal_broadcast_around_subscribe(  # type: ignore[empty-body]
        self, url: BackboneURL, channel: str, attempt: Callable[[], Awaitable[None]]
    ) -> Awaitable[None]:
        """Around entering ``Broadcast.subscribe(channel)``: the awaitable returns once the
        channel is live for this subscriber, or raises typed."""


class _Core:
    """The innermost implementation of each hook: the core's own work, not wrapped."""

    @hookimpl(trylast=True)
    def opal_broadcast_around_connect(
        self, attempt: Callable[[], Awaitable[None]]
    ) -> Awaitable[None]:
        return attempt()

    @hookimpl(trylast=True)
    def opal_broadcast_around_publish(
        self, attempt: Callable[[], Awaitable[None]]
    ) -> Awaitable[None]:
        return attempt()

    @hookimpl(trylast=True)
    def opal_broadcast_around_subscribe(
        self, attempt: Callable[[], Awaitable[None]]
    ) -> Awaitable[None]:
        return attempt()


class Wrappers:
    """The registered wrappers, and which of the core's calls have any (read on every call)."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(PROJECT)
        self.manager.add_hookspecs(_Specs)
        self.manager.register(_Core(), name="opal_broadcast.core")
        self.hook = self.manager.hook
        self.connect = self.publish = self.subscribe = False
        self._autoloaded = False

    def register(self, plugin: object, name: str | None = None) -> None:
        """Add ``plugin``'s wrappers; refuse an implementation that is not a wrapper."""
        for attribute in dir(plugin):
            if not attribute.startswith("opal_broadcast_around_"):
                continue
            options: Mapping[str, Any] = self.manager.parse_hookimpl_opts(plugin, attribute) or {}
            if not (options.get("wrapper") or options.get("hookwrapper")):
                raise ValueError(
                    f"{attribute} of {name or plugin!r} must be marked "
                    "@hookimpl(wrapper=True): the core's own implementation does the work."
                )
        self.manager.register(plugin, name=name)
        self._refresh()

    def unregister(self, plugin: object) -> None:
        """Remove ``plugin``'s wrappers (nothing if it was not registered)."""
        if self.manager.is_registered(plugin):
            self.manager.unregister(plugin)
            self._refresh()

    def autoload(self) -> None:
        """Register the wrappers declared under the entry point group, once per process."""
        if self._autoloaded:
            return
        self._autoloaded = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                self.register(ep.load(), name=f"{ep.group}:{ep.name}")
            except Exception as exc:  # one broken wrapper must not stop the backbones
                logger.error("opal-broadcast wrapper %s failed to load: %r", ep.value, exc)

    def _refresh(self) -> None:
        def wrapped(name: str) -> bool:
            return len(getattr(self.hook, name).get_hookimpls()) > 1

        self.connect = wrapped("opal_broadcast_around_connect")
        self.publish = wrapped("opal_broadcast_around_publish")
        self.subscribe = wrapped("opal_broadcast_around_subscribe")


wrappers = Wrappers()


def register_wrappers(plugin: object, *, name: str | None = None) -> None:
    """Wrap the core's calls with ``plugin``'s ``opal_broadcast_around_*`` wrappers, from now on,
    on every backbone (see :mod:`opal_broadcast._wrappers`)."""
    wrappers.register(plugin, name)


def unregister_wrappers(plugin: object) -> None:
    """Stop wrapping with ``plugin``'s wrappers."""
    wrappers.unregister(plugin)
