"""Kafka: the broker, topic names and client timeouts."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from infra.settings.base import SettingsContext, stack_state


class KafkaSettings(SettingsContext):
    """The broker connection and the topics' names, partitions and retention."""

    title: ClassVar[str] = "Kafka"
    effective: ClassVar[dict[str, str]] = {"bootstrap_servers": "bootstrap_servers"}

    kafka_bootstrap_servers: str = Field(
        default="",
        validation_alias="KAFKA_BOOTSTRAP_SERVERS",
        description="Kafka brokers; empty: the embedded stack's broker (`.tradeloop/stack.json`), else `localhost:9092`.",
    )
    topic_prefix: str = Field(
        default="tradeloop.",
        validation_alias="TOPIC_PREFIX",
        description="Prefix of every topic name.",
    )
    topic_partitions: int = Field(
        default=4,
        ge=1,
        validation_alias="TOPIC_PARTITIONS",
        description="Partitions of created topics (`models` always has one).",
    )
    kafka_request_timeout_ms: int = Field(
        default=10_000,
        validation_alias="KAFKA_REQUEST_TIMEOUT_MS",
        description="Kafka request timeout.",
    )
    kafka_session_timeout_ms: int = Field(
        default=10_000,
        validation_alias="KAFKA_SESSION_TIMEOUT_MS",
        description="Consumer-group session timeout.",
    )
    retention_ms: int = Field(
        default=7 * 24 * 3600 * 1000,
        validation_alias="TOPIC_RETENTION_MS",
        description="Retention of the non-compacted topics.",
    )

    @property
    def bootstrap_servers(self) -> str:
        """Return the broker: env, else the embedded stack, else localhost:9092."""
        if self.kafka_bootstrap_servers:
            return self.kafka_bootstrap_servers
        kafka = stack_state().get("kafka") or {}
        return str(kafka.get("bootstrap") or "localhost:9092")

    def topic(self, name: str) -> str:
        """Return the full topic name for a short name such as `bars`."""
        return f"{self.topic_prefix}{name}"
