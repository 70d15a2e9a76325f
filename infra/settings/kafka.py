"""Kafka: the broker, topic names and client timeouts."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr

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
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        validation_alias="KAFKA_SECURITY_PROTOCOL",
        description="How clients talk to the broker; production brokers use `SASL_SSL`.",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        default="SCRAM-SHA-512",
        validation_alias="KAFKA_SASL_MECHANISM",
        description="SASL mechanism of the `SASL_*` protocols.",
    )
    kafka_sasl_username: str = Field(
        default="",
        validation_alias="KAFKA_SASL_USERNAME",
        description="This service's Kafka user (one per service: trader, trainer, worker).",
    )
    kafka_sasl_password: SecretStr = Field(
        default=SecretStr(""),
        validation_alias="KAFKA_SASL_PASSWORD",
        description="The Kafka user's password (secret).",
    )
    kafka_ssl_cafile: str = Field(
        default="",
        validation_alias="KAFKA_SSL_CAFILE",
        description="CA bundle that signs the broker's certificate (`SSL`/`SASL_SSL`); empty: the system's.",
    )
    kafka_ssl_certfile: str = Field(
        default="",
        validation_alias="KAFKA_SSL_CERTFILE",
        description="Client certificate for mutual TLS (optional).",
    )
    kafka_ssl_keyfile: str = Field(
        default="",
        validation_alias="KAFKA_SSL_KEYFILE",
        description="Private key of the client certificate (optional; keep it 0600).",
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
