"""Every error opal-broadcast raises, in one hierarchy.

::

    BroadcastError
    ├── ConfigurationError              the URL, options or installed plugins are wrong; retrying won't help
    │   ├── InvalidURL (ValueError)     malformed URL
    │   │   └── MissingURL              neither a URL nor a backend given (an AssertionError too)
    │   ├── InvalidOption (ValueError)  unknown or badly typed option (query string or keyword)
    │   ├── UnknownScheme (ValueError)  no installed plugin serves the scheme (names the pip install)
    │   ├── PluginLoadError             the plugin for the scheme is installed but failed to load
    │   │   └── IncompatiblePlugin      it implements a plugin contract version this core does not
    │   ├── PluginConflict              two plugins claim one scheme (names both and how to pin one)
    │   └── UnsupportedAsyncLibrary     the backbone cannot run on the current event loop (e.g. trio)
    ├── InvalidChannel (ValueError)     a channel name the backbone cannot carry
    ├── InvalidMessage (ValueError)     a message the backbone cannot carry
    │   └── MessageTooLarge             over the backbone's documented cap, refused before sending
    ├── NotConnectedError               used before ``connect()`` or after ``disconnect()``
    ├── BackboneError                   the backbone failed us at run time
    │   ├── BackboneUnavailable         unreachable, timed out, or lost; retrying later may help
    │   ├── AuthenticationFailed        the backbone refused the credentials
    │   └── AccessDenied                the credentials may not use this channel (access control)
    └── SubscriptionGap                 a subscriber may have missed messages; subscribe again to resume
        └── SubscriberOverflow          it fell behind: its bounded queue filled and messages were dropped

``PluginContractWarning`` (a ``DeprecationWarning``) is issued once for a plugin written against
a contract version the core still runs but will drop.

Every message says what to do about it. Secrets from the URL never appear in a message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._events import Gap

__all__ = [
    "AccessDenied",
    "AuthenticationFailed",
    "BackboneError",
    "BackboneUnavailable",
    "BroadcastError",
    "ConfigurationError",
    "IncompatiblePlugin",
    "InvalidChannel",
    "InvalidMessage",
    "InvalidOption",
    "InvalidURL",
    "MessageTooLarge",
    "MissingURL",
    "NotConnectedError",
    "PluginConflict",
    "PluginContractWarning",
    "PluginLoadError",
    "SubscriberOverflow",
    "SubscriptionGap",
    "UnknownScheme",
    "UnsupportedAsyncLibrary",
]


class BroadcastError(Exception):
    """Base class of every error raised by opal-broadcast and its plugins."""


class ConfigurationError(BroadcastError):
    """The URL, the options or the installed plugins are wrong: fix the configuration."""


class InvalidURL(ConfigurationError, ValueError):
    """The broadcast URL is malformed."""


class MissingURL(InvalidURL, AssertionError):
    """``Broadcast()`` was given neither a URL nor a backend (an ``AssertionError`` too, as
    broadcaster's ``assert`` raised)."""


class InvalidOption(ConfigurationError, ValueError):
    """An option in the URL's query string or in the keyword arguments is unknown or invalid."""


class UnknownScheme(ConfigurationError, ValueError):
    """No installed plugin serves the URL's scheme."""

    def __init__(self, message: str, *, scheme: str, installed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.scheme = scheme
        self.installed = installed


class PluginLoadError(ConfigurationError):
    """The plugin that serves the scheme is installed but could not be loaded (see ``__cause__``)."""


class IncompatiblePlugin(PluginLoadError):
    """The plugin implements a contract version this core does not (the message names the fix)."""

    def __init__(self, message: str, *, schemes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.schemes = schemes


class PluginContractWarning(DeprecationWarning):
    """The plugin implements a contract version that a later core will refuse (see the guide)."""


class PluginConflict(ConfigurationError):
    """Two plugins claim the same scheme; pin one explicitly."""


class UnsupportedAsyncLibrary(ConfigurationError):
    """The backbone's plugin does not run on the current async library."""


class InvalidChannel(BroadcastError, ValueError):
    """The channel name cannot be carried by this backbone (checked before any I/O)."""


class InvalidMessage(BroadcastError, ValueError):
    """The message cannot be carried by this backbone (checked before any I/O)."""


class MessageTooLarge(InvalidMessage):
    """The message is larger than the backbone's documented cap; nothing was sent."""


class NotConnectedError(BroadcastError):
    """The ``Broadcast`` is not connected: call ``await b.connect()`` or use ``async with``."""


class BackboneError(BroadcastError):
    """The backbone failed at run time."""


class BackboneUnavailable(BackboneError, ConnectionError):
    """The backbone could not be reached, timed out, or the connection was lost."""


class AuthenticationFailed(BackboneError):
    """The backbone refused the credentials (the secret itself is never shown)."""


class AccessDenied(BackboneError):
    """The backbone refused this channel to these credentials (an ACL); retrying won't help."""


class SubscriptionGap(BroadcastError):
    """This subscriber may have missed messages; the subscription has ended.

    Subscribing again works as soon as the backbone is reachable. ``gap`` says what happened.
    """

    def __init__(self, gap: Gap) -> None:
        super().__init__(gap.describe())
        self.gap = gap


class SubscriberOverflow(SubscriptionGap):
    """The subscriber fell behind: its queue filled and ``gap.missed`` messages were dropped."""
