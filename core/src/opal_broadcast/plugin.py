"""The plugin author's contract: everything a backbone plugin imports from the core, in one module.

A plugin is a distribution with one entry point in the ``opal_broadcast`` group, naming a module
that implements one hook and imports no driver::

    # pyproject.toml
    [project.entry-points.opal_broadcast]
    nats = "opal_broadcast_nats.plugin"

    # opal_broadcast_nats/plugin.py
    from opal_broadcast.plugin import CONTRACT_VERSION, BackboneInfo, hookimpl
    from ._connection import NatsConnection  # imports nats-py inside NatsConnection.open only

    @hookimpl
    def opal_broadcast_backbone() -> BackboneInfo:
        return BackboneInfo(
            schemes=("nats",), contract=CONTRACT_VERSION, connection=NatsConnection,
            async_libraries=("asyncio",), summary="NATS core pub/sub on nats-py",
        )

``NatsConnection`` implements :class:`Connection`; the core gives it a :class:`Link`. The core
checks the declaration when it discovers the plugin (a missing method, a wrong signature, a bad
scheme or a contract version it does not implement is reported then, naming the fix), and mypy
checks ``connection=NatsConnection`` against :class:`Connection` in the author's editor.

Compatibility: the contract version changes only when a plugin written for the previous one
would break. Adding an optional capability or a new error type is not such a change.
The guide is ``docs/plugin-authors.md``; the conformance kit is :mod:`opal_broadcast.testing`.

Besides backbones, pluggy carries wrappers around the core's own calls (connect, publish,
subscribe) for tracers, metrics and audit logs: :func:`register_wrappers` (see the guide's
"Wrapping the core's calls"). A backend written for encode/broadcaster ships as the plugin of a
scheme with :func:`broadcaster_backend_info`.
"""

from ._broadcaster_backend import broadcaster_backend_info
from ._contract import CAPABILITIES, CONTRACT_VERSION, BackboneInfo, Connection, Link
from ._errors import (
    AccessDenied,
    AuthenticationFailed,
    BackboneError,
    BackboneUnavailable,
    BroadcastError,
    ConfigurationError,
    IncompatiblePlugin,
    InvalidChannel,
    InvalidMessage,
    InvalidOption,
    InvalidURL,
    MessageTooLarge,
    PluginContractWarning,
    PluginLoadError,
    UnsupportedAsyncLibrary,
)
from ._hookspecs import hookimpl
from ._lazy import lazy_import
from ._options import Option, Options
from ._reader import start_reader
from ._translate import ErrorMap, Redactor
from ._url import BackboneURL, HostPort, take_options
from ._wrappers import register_wrappers, unregister_wrappers

__all__ = [
    "CAPABILITIES",
    "CONTRACT_VERSION",
    "AccessDenied",
    "AuthenticationFailed",
    "BackboneError",
    "BackboneInfo",
    "BackboneURL",
    "BackboneUnavailable",
    "BroadcastError",
    "ConfigurationError",
    "Connection",
    "ErrorMap",
    "HostPort",
    "IncompatiblePlugin",
    "InvalidChannel",
    "InvalidMessage",
    "InvalidOption",
    "InvalidURL",
    "Link",
    "MessageTooLarge",
    "Option",
    "Options",
    "PluginContractWarning",
    "PluginLoadError",
    "Redactor",
    "UnsupportedAsyncLibrary",
    "broadcaster_backend_info",
    "hookimpl",
    "lazy_import",
    "register_wrappers",
    "start_reader",
    "take_options",
    "unregister_wrappers",
]
