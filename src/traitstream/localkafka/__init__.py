"""A local Apache Kafka: the pinned artifacts (``artifacts``) and the nodes that run
them (``cluster``), for ``traitstream dev``, the tests and the bench."""

from traitstream.localkafka.artifacts import KAFKA_VERSION, KafkaUnavailable, ensure_jars
from traitstream.localkafka.cluster import LocalKafka

__all__ = ["KAFKA_VERSION", "KafkaUnavailable", "LocalKafka", "ensure_jars"]
