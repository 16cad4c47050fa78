"""Apache Kafka backbone for opal-broadcast: ``Broadcast("kafka://host1:9092,host2:9092")``.

Installing the distribution is all it takes: the core finds the plugin through its entry point
(``opal_broadcast_kafka.plugin``). Importing this package imports no driver; aiokafka is loaded
when the first ``kafka://`` connection opens. See the README for URLs, options, the ``KAFKA_*``
environment variables, topic names and delivery semantics.
"""

from ._options import ENVIRONMENT, OPTIONS
from ._topics import MAX_TOPIC_LENGTH

__all__ = ["ENVIRONMENT", "MAX_TOPIC_LENGTH", "OPTIONS"]
