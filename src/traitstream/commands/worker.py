"""``traitstream worker``: one member of the consumer group, wired to Kafka, Redis
and PostgreSQL."""

from __future__ import annotations

import argparse
import logging

from traitstream import logs
from traitstream.commands.options import Commands, add_command, settings_from
from traitstream.config import WorkerSettings
from traitstream.metrics import WorkerMetrics
from traitstream.worker.relay import ChangeRelay

log = logging.getLogger(__name__)


def register(commands: Commands) -> None:
    add_command(commands, "worker", "run one worker of the consumer group", WorkerSettings, run)


def run(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient
    from prometheus_client import start_http_server

    from traitstream.avro.schemas import schema_source
    from traitstream.runtime import tune_gc
    from traitstream.store.database import wait_for_migrations
    from traitstream.store.profiles import ProfileStore
    from traitstream.worker.consumer import Worker, consumer_config, incremental
    from traitstream.worker.dedupe import RedisDeduper
    from traitstream.worker.dlq import DeadLetters

    settings = settings_from(args, WorkerSettings)
    logs.setup(settings.log_format, settings.log_level)
    metrics = WorkerMetrics()
    start_http_server(settings.metrics_port, settings.metrics_host, registry=metrics.registry)
    wait_for_migrations(settings.database_url)
    relay = change_relay(settings, metrics)
    worker = Worker(
        Consumer(
            consumer_config(
                settings.kafka_bootstrap,
                settings.group_id,
                settings.session_timeout_ms,
                settings.group_protocol,
            )
        ),
        AdminClient({"bootstrap.servers": settings.kafka_bootstrap}),
        settings.topic,
        schema_source(settings),
        RedisDeduper(settings.redis_url, settings.dedupe_ttl_s),
        ProfileStore(settings.database_url, settings.topic, changes=relay is not None),
        DeadLetters(settings.kafka_bootstrap, settings.topic, settings.dlq_topic),
        metrics,
        batch_size=settings.batch_size,
        batch_wait_s=settings.batch_wait_s,
        incremental=incremental(settings.group_protocol),
        relay=relay,
    )
    log.info(
        "worker settings",
        extra={"batch_size": settings.batch_size, "group_protocol": settings.group_protocol},
    )
    worker.install_signal_handlers()
    tune_gc()
    worker.run()
    return 0


RELAY_PRODUCE_TIMEOUT_S = 30.0


def change_relay(settings: WorkerSettings, metrics: WorkerMetrics) -> ChangeRelay | None:
    """The worker's change relay (None when the stream is off)."""
    from confluent_kafka import KafkaException

    from traitstream import kafka_admin
    from traitstream.avro.changes import change_schemas
    from traitstream.kafka_producer import RenewableProducer
    from traitstream.store.outbox import Outbox

    if settings.changes == "off":
        log.info("the profile changes stream is off (TRAITSTREAM_CHANGES=off)")
        return None
    try:
        # Created like the other topics when missing (deployments usually create it
        # beforehand); a broker that cannot be asked now leaves it to them.
        kafka_admin.ensure_topics(
            settings.kafka_bootstrap,
            {settings.changes_topic: settings.partitions},
            configs={settings.changes_topic: kafka_admin.CHANGES_TOPIC_CONFIG},
        )
    except KafkaException as exc:
        log.warning("could not check topic %s: %s", settings.changes_topic, exc)
    return ChangeRelay(
        Outbox(settings.database_url),
        RenewableProducer(
            settings.kafka_bootstrap,
            RELAY_PRODUCE_TIMEOUT_S,
            linger_ms=5.0,
            # Only failures call back: the relay learns of successes from flush.
            extra_config={"delivery.report.only.error": True},
        ),
        settings.changes_topic,
        settings.topic,
        change_schemas(settings),
        metrics,
    )
