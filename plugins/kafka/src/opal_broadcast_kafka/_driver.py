"""The parts of aiokafka this plugin uses, imported when first used rather than at discovery.

The core imports the plugin's modules when it discovers the backbone, which must not depend on
the driver: a missing or broken aiokafka then fails the first ``kafka://`` connection with
:class:`~opal_broadcast.PluginLoadError` and a reinstall hint, and nothing else. Only public
modules are listed here; the one private internal used (``aiokafka.conn.create_conn``) has a
fence of its own, ``_create_conn``.
"""

from __future__ import annotations

from opal_broadcast.plugin import lazy_import

__all__ = ["DISTRIBUTION", "aiokafka", "kafka_admin", "kafka_errors", "kafka_helpers"]

DISTRIBUTION = "opal-broadcast-kafka"

#: ``AIOKafkaProducer``, ``AIOKafkaConsumer``, ``TopicPartition``
aiokafka = lazy_import("aiokafka", distribution=DISTRIBUTION)
#: ``AIOKafkaAdminClient``, ``NewTopic``
kafka_admin = lazy_import("aiokafka.admin", distribution=DISTRIBUTION)
kafka_errors = lazy_import("aiokafka.errors", distribution=DISTRIBUTION)
#: ``create_ssl_context``
kafka_helpers = lazy_import("aiokafka.helpers", distribution=DISTRIBUTION)
