"""opal-broadcast: a broadcast channel for OPAL server, with pluggable backbones and no silent gaps.

``Broadcast(url)`` is a drop-in for encode/broadcaster's class. The backbone is chosen by the URL's
scheme and served by a plugin found through the ``opal_broadcast`` entry-point group:
``memory://`` is built in; ``pip install opal-broadcast-redis`` (or ``-postgres``, ``-kafka``)
adds the others. Plugin authors: see :mod:`opal_broadcast.plugin` and
:mod:`opal_broadcast.testing`.
"""

from ._broadcast import Broadcast, Subscription
from ._broadcaster_backend import BroadcastBackend
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
    MissingURL,
    NotConnectedError,
    PluginConflict,
    PluginContractWarning,
    PluginLoadError,
    SubscriberOverflow,
    SubscriptionGap,
    UnknownScheme,
    UnsupportedAsyncLibrary,
)
from ._events import Event, Gap, Health
from ._hookspecs import BackboneInfo, BackboneLink, hookimpl
from ._registry import Backbone, backbones, register
from ._subscriber import Subscriber
from ._url import BackboneURL, HostPort, take_options

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "AuthenticationFailed",
    "Backbone",
    "BackboneError",
    "BackboneInfo",
    "BackboneLink",
    "BackboneURL",
    "BackboneUnavailable",
    "Broadcast",
    "BroadcastBackend",
    "BroadcastError",
    "ConfigurationError",
    "Event",
    "Gap",
    "Health",
    "HostPort",
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
    "Subscriber",
    "SubscriberOverflow",
    "Subscription",
    "SubscriptionGap",
    "UnknownScheme",
    "UnsupportedAsyncLibrary",
    "backbones",
    "hookimpl",
    "register",
    "take_options",
]
