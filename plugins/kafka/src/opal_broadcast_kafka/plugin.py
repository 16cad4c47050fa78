"""The ``kafka://`` backbone's declaration: the module the ``opal_broadcast`` entry point names.

Imports no driver: aiokafka is imported by ``KafkaConnection.open``, when the first connection
opens, so a missing or broken aiokafka cannot break the discovery of other backbones. The URL,
the options and the environment are checked before any I/O, and so are channel names and message
sizes, even while the brokers are unreachable (``check_channel``, ``check_message``).
"""

from __future__ import annotations

from opal_broadcast.plugin import CONTRACT_VERSION, BackboneInfo, hookimpl

from ._connection import KafkaConnection

__all__ = ["opal_broadcast_backbone"]


@hookimpl
def opal_broadcast_backbone() -> BackboneInfo:
    return BackboneInfo(
        schemes=("kafka",),
        contract=CONTRACT_VERSION,
        connection=KafkaConnection,
        async_libraries=("asyncio",),  # aiokafka is an asyncio client
        summary="Apache Kafka (aiokafka): every process reads every partition; positions survive reconnects",
        distribution="opal-broadcast-kafka",
    )
