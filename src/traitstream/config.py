"""Settings, from ``TRAITSTREAM_*`` environment variables or the matching CLI flags.

One class per process, built by its command (``traitstream.commands``) and passed
down; nothing here connects to anything.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from traitstream.origins import AllowedOrigins


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAITSTREAM_", extra="ignore", frozen=True)

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    database_url: str = Field(
        "postgresql://127.0.0.1:5432/traitstream",
        description="PostgreSQL URL of the profile store (the database is created if missing)",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL for dedupe keys")
    topic: str = Field("identify", description="Kafka topic of identify records")
    changes_topic: str = Field("profiles.changes", description="Kafka topic of profile changes")
    schema_registry_url: str | None = Field(
        None, description="Confluent-compatible schema registry URL (optional)"
    )
    log_format: str = Field("auto", description="json, text, or auto (json when not a terminal)")
    log_level: str = Field("info", description="debug, info, warning or error")

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"


class EdgeSettings(CommonSettings):
    http_host: str = Field("127.0.0.1", description="address the edge listens on")
    http_port: int = Field(8080, description="HTTP port of the edge")
    produce_timeout_s: float = Field(
        10.0, description="seconds to wait for the broker's acknowledgement before answering 503"
    )
    produce_linger_ms: float = Field(
        1.0,
        description="milliseconds the producer waits to fill a request to the broker "
        "(longer: less broker work per identify; shorter: lower latency)",
    )
    key_cache_s: float = Field(30.0, description="seconds an API key lookup is cached")
    max_future_skew_s: float = Field(
        600.0,
        ge=0,
        description="seconds past its receipt an identify may be dated; one dated later is "
        "taken as received (so a client clock running ahead cannot hold a trait)",
    )
    http_workers: int = Field(1, description="edge processes sharing the HTTP port")
    cors_origins: str = Field(
        "*",
        description="origins whose web pages may call the ingestion routes: * (any) or a "
        "comma-separated list such as https://www.example.com,https://app.example.com",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        AllowedOrigins.parse(value)  # refuse a bad list at start, naming the origin at fault
        return value


class WorkerSettings(CommonSettings):
    metrics_host: str = Field("127.0.0.1", description="address of the metrics endpoint")
    metrics_port: int = Field(9108, description="port of the worker's metrics endpoint")
    group_id: str = Field("traitstream", description="Kafka consumer group")
    batch_size: int = Field(2000, description="most records merged in one database transaction")
    batch_wait_s: float = Field(0.05, description="longest wait to fill a batch")
    dedupe_ttl_s: int = Field(86_400, description="seconds a dedupe key is kept in Redis")
    session_timeout_ms: int = Field(
        10_000,
        description="consumer session timeout of the classic protocols (on the consumer protocol "
        "the broker's group.consumer.session.timeout.ms rules)",
    )
    partitions: int = Field(12, description="partition count used when the topic is created")
    changes: Literal["on", "off"] = Field(
        "on",
        description="publish every profile change on the changes topic (on), or not (off: no outbox "
        "rows are written and no relay runs)",
    )
    group_protocol: Literal["consumer", "cooperative-sticky", "eager"] = Field(
        "consumer",
        description="how the group hands partitions out: consumer (KIP-848, the broker assigns "
        "and moves only the partitions that change owner), cooperative-sticky (the classic "
        "protocol, incrementally), or eager (the classic protocol, every member stops at a rebalance)",
    )


class DevSettings(EdgeSettings, WorkerSettings):
    dev_api_key: str | None = Field(None, description="API key registered in workspace dev")
    workers: int = Field(2, description="worker processes to run")
    data_dir: str = Field(
        "~/.local/share/traitstream",
        description="where the local Apache Kafka started when nothing answers at the bootstrap "
        "address keeps its log",
    )
    # Locally a worker that dies should hand its partitions over in seconds, and a
    # fresh group forms faster too (brokers hold a join for part of this timeout).
    session_timeout_ms: int = Field(6_000, description="Kafka consumer session timeout")
