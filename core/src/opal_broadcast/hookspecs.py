"""The hooks a backbone plugin implements (public name of the plugin author's contract)."""

from ._hookspecs import (
    BackboneInfo,
    BackboneLink,
    hookimpl,
    hookspec,
    opal_broadcast_backbone,
    opal_broadcast_check_channel,
    opal_broadcast_check_message,
    opal_broadcast_connect,
    opal_broadcast_disconnect,
    opal_broadcast_probe,
    opal_broadcast_publish,
    opal_broadcast_subscribe,
    opal_broadcast_unsubscribe,
)

__all__ = [
    "BackboneInfo",
    "BackboneLink",
    "hookimpl",
    "hookspec",
    "opal_broadcast_backbone",
    "opal_broadcast_check_channel",
    "opal_broadcast_check_message",
    "opal_broadcast_connect",
    "opal_broadcast_disconnect",
    "opal_broadcast_probe",
    "opal_broadcast_publish",
    "opal_broadcast_subscribe",
    "opal_broadcast_unsubscribe",
]
