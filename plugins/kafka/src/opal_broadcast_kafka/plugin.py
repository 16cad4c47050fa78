"""The ``kafka://`` backbone's hooks: the module the ``opal_broadcast`` entry point names.

This module imports no driver. aiokafka is imported (through ``._connection``) inside
:func:`opal_broadcast_connect`, when the first connection opens, so a missing or broken aiokafka
cannot break the discovery of other backbones. The URL, the options and the environment are
checked before any I/O, and so are channel names and message sizes, even while the brokers are
unreachable (``check_channel``, ``check_message``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from opal_broadcast import (
    BackboneInfo,
    BackboneLink,
    BackboneURL,
    InvalidMessage,
    MessageTooLarge,
    PluginLoadError,
    hookimpl,
)

from ._settings import settings_for, topic_prefix
from ._topics import TopicNames

if TYPE_CHECKING:
    from ._connection import KafkaConnection

__all__: list[str] = []

DEFAULT_CAP = 1048576
#: Upper bound of what a record batch adds to a payload without headers (61 + 21 bytes).
RECORD_OVERHEAD = 100
_prefixes: dict[str, TopicNames] = {}


def _names(prefix: str) -> TopicNames:
    names = _prefixes.get(prefix)
    if names is None:
        if len(_prefixes) >= 64:
            _prefixes.clear()
        names = _prefixes[prefix] = TopicNames(prefix)
    return names


@hookimpl
def opal_broadcast_backbone() -> BackboneInfo:
    return BackboneInfo(
        schemes=("kafka",),
        async_libraries=("asyncio",),  # aiokafka is an asyncio client
        summary="Apache Kafka (aiokafka): every process reads every partition; positions survive reconnects",
    )


@hookimpl
async def opal_broadcast_connect(
    url: BackboneURL, options: dict[str, Any], link: BackboneLink
) -> KafkaConnection:
    settings = settings_for(url, options)
    try:
        from ._connection import KafkaConnection
    except ImportError as exc:
        raise PluginLoadError(
            f"The kafka:// backbone needs aiokafka >= 0.13, which failed to import ({exc}). "
            "Reinstall it: pip install --force-reinstall opal-broadcast-kafka"
        ) from exc
    return await KafkaConnection.open(url, settings, link)


@hookimpl
def opal_broadcast_check_channel(url: BackboneURL, options: dict[str, Any], channel: str) -> None:
    _names(topic_prefix(url, options)).topic(channel)


@hookimpl
def opal_broadcast_check_message(
    url: BackboneURL, options: dict[str, Any], channel: str, message: str | bytes
) -> None:
    # Called while the brokers are unreachable, so that an oversized message is refused at once;
    # once connected the connection checks the exact record size (this estimate is generous).
    cap = options.get("max_request_size", url.options.get("max_request_size", DEFAULT_CAP))
    try:
        size = len(message.encode() if isinstance(message, str) else message)
    except UnicodeEncodeError as exc:
        raise InvalidMessage(
            f"The message is not valid Unicode text ({exc.reason} at {exc.start}): encode it "
            "yourself and publish bytes."
        ) from None
    if str(cap).isdigit() and size + RECORD_OVERHEAD > int(cap):
        raise MessageTooLarge(
            f"The message is {size} bytes, over the {cap}-byte max_request_size; nothing was "
            "sent. Send less, or raise the kafka:// option max_request_size together with the "
            "brokers' message.max.bytes."
        )


@hookimpl
async def opal_broadcast_disconnect(connection: KafkaConnection) -> None:
    await connection.close()


@hookimpl
def opal_broadcast_publish(
    connection: KafkaConnection, channel: str, message: str | bytes
) -> Awaitable[None]:
    # The connection's coroutine itself, not one wrapping it: this is the hot path.
    return connection.publish(channel, message)


@hookimpl
async def opal_broadcast_subscribe(connection: KafkaConnection, channel: str) -> None:
    await connection.subscribe(channel)


@hookimpl
async def opal_broadcast_unsubscribe(connection: KafkaConnection, channel: str) -> None:
    connection.unsubscribe(channel)


@hookimpl
def opal_broadcast_probe(connection: KafkaConnection) -> Awaitable[None]:
    return connection.probe()
