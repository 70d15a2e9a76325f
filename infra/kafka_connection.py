"""The one typed Kafka connection every client of tradeloop is built from.

`KafkaConnection` holds the brokers, client id, timeouts and `KafkaSecurity` (TLS and
SASL/SCRAM); it gives the options of producers, consumers, the admin client and the
streams worker's Faust app. `start_error` turns a client's start-up failure into a
clear error naming the broker and the settings to check.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr

from infra.settings import KafkaSettings

__all__ = [
    "BrokerUnavailableError",
    "KafkaAuthError",
    "KafkaConnection",
    "KafkaSecurity",
    "KafkaSecurityError",
    "start_error",
]


class BrokerUnavailableError(RuntimeError):
    """Raise when the Kafka broker cannot be reached."""

    def __init__(self, bootstrap: str, cause: BaseException | None = None) -> None:
        self.bootstrap = bootstrap
        detail = f" ({type(cause).__name__})" if cause else ""
        super().__init__(
            f"cannot reach Kafka at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS){detail}; "
            "start the embedded broker with `tradeloop stack up` or point "
            "KAFKA_BOOTSTRAP_SERVERS at a running broker"
        )


class KafkaSecurityError(ValueError):
    """Raise when the Kafka security settings are incomplete or inconsistent."""


class KafkaAuthError(BrokerUnavailableError):
    """Raise when a TLS or SASL connection to the broker fails (down, or refused)."""

    def __init__(self, bootstrap: str, how: str, cause: BaseException) -> None:
        self.bootstrap = bootstrap
        RuntimeError.__init__(
            self,
            f"cannot connect to Kafka at {bootstrap} with {how} ({type(cause).__name__}): the "
            "broker is down, does not offer this protocol or mechanism, or refused the "
            "credentials; check KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, "
            "KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD and KAFKA_SSL_CAFILE",
        )


def start_error(bootstrap: str, options: Mapping[str, Any], exc: Exception) -> Exception | None:
    """Return the error to raise for a client that failed to start (None: re-raise)."""
    protocol = options.get("security_protocol", "PLAINTEXT")
    if protocol != "PLAINTEXT" and isinstance(exc, KafkaError | KeyError | OSError):
        how = protocol
        if "sasl_mechanism" in options:
            how += f" {options['sasl_mechanism']} as user {options['sasl_plain_username']!r}"
        return KafkaAuthError(bootstrap, how, exc)
    if isinstance(exc, KafkaConnectionError):
        return BrokerUnavailableError(bootstrap, exc)
    return None


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How clients authenticate and encrypt: `PLAINTEXT`, TLS, SASL or SASL over TLS."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password: SecretStr = field(default=SecretStr(""), repr=False)
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""

    def __post_init__(self) -> None:
        if self.protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise KafkaSecurityError(f"unknown KAFKA_SECURITY_PROTOCOL {self.protocol!r}")
        if self.uses_sasl and not (self.username and self.password.get_secret_value()):
            raise KafkaSecurityError(
                f"KAFKA_SECURITY_PROTOCOL={self.protocol} needs KAFKA_SASL_USERNAME and "
                "KAFKA_SASL_PASSWORD"
            )
        if bool(self.certfile) != bool(self.keyfile):
            raise KafkaSecurityError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        if (self.cafile or self.certfile) and not self.uses_tls:
            raise KafkaSecurityError(
                f"TLS files are set but KAFKA_SECURITY_PROTOCOL={self.protocol} does not use TLS"
            )

    @classmethod
    def from_settings(cls, settings: KafkaSettings) -> KafkaSecurity:
        """Return the security of the Kafka settings (checked: see `KafkaSecurityError`)."""
        return cls(
            protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )

    @property
    def uses_sasl(self) -> bool:
        """Say whether clients authenticate with SASL."""
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        """Say whether the connection is encrypted with TLS."""
        return self.protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """Return the TLS context (hostname checked, CA and client certificate loaded)."""
        if not self.uses_tls:
            return None
        return create_ssl_context(  # type: ignore[no-any-return]
            cafile=self.cafile or None,
            certfile=self.certfile or None,
            keyfile=self.keyfile or None,
        )

    def client_options(self) -> dict[str, Any]:
        """Return the aiokafka options of this security (empty for PLAINTEXT)."""
        if self.protocol == "PLAINTEXT":
            return {}
        opts: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            opts["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            opts.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password.get_secret_value(),
            )
        return opts

    def faust_credentials(self) -> Any:
        """Return the `faust.App(broker_credentials=...)` of this security (None: PLAINTEXT)."""
        if self.protocol == "PLAINTEXT":
            return None
        from faust.auth import SASLCredentials, SSLCredentials

        if self.uses_sasl:
            return SASLCredentials(
                username=self.username,
                password=self.password.get_secret_value(),
                ssl_context=self.ssl_context(),
                mechanism=self.sasl_mechanism,
            )
        return SSLCredentials(self.ssl_context())


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """How every client connects: one broker list, one client id, timeouts and security.

    `client_id` prefixes each client's id (`tradeloop-producer`, `tradeloop-monitor`).
    """

    bootstrap_servers: str
    client_id: str = "tradeloop"
    request_timeout_ms: int = 10_000
    session_timeout_ms: int = 10_000
    security: KafkaSecurity = KafkaSecurity()

    @classmethod
    def from_settings(
        cls, settings: KafkaSettings, *, bootstrap: str | None = None
    ) -> KafkaConnection:
        """Return the connection of the Kafka settings (`bootstrap` overrides the broker)."""
        return cls(
            bootstrap_servers=bootstrap or settings.bootstrap_servers,
            request_timeout_ms=settings.kafka_request_timeout_ms,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            security=KafkaSecurity.from_settings(settings),
        )

    @property
    def heartbeat_interval_ms(self) -> int:
        """Return the group heartbeat interval: a fifth of the session timeout, >= 300 ms."""
        return max(300, self.session_timeout_ms // 5)

    @property
    def group_request_timeout_ms(self) -> int:
        """Return a consumer's request timeout: it outlasts a group session by 5 s."""
        return max(self.request_timeout_ms, self.session_timeout_ms + 5000)

    @property
    def rebalance_timeout_ms(self) -> int:
        """Return how long a rebalance waits for members to rejoin."""
        return max(30_000, self.session_timeout_ms * 3)

    def client(self, role: str) -> str:
        """Return the client id of a role (`producer` -> `tradeloop-producer`)."""
        return f"{self.client_id}-{role}"

    def producer_options(self) -> dict[str, Any]:
        """Return the options of an idempotent producer that waits for every replica."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client("producer"),
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 5,
            "request_timeout_ms": self.request_timeout_ms,
            **self.security.client_options(),
        }

    def consumer_options(self, group_id: str | None, *, from_beginning: bool) -> dict[str, Any]:
        """Return the options of a manual-commit consumer, in a group or (None) in none."""
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client("consumer"),
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest" if from_beginning else "latest",
            "request_timeout_ms": self.group_request_timeout_ms,
            **self.security.client_options(),
        }
        if group_id is not None:
            opts.update(
                session_timeout_ms=self.session_timeout_ms,
                heartbeat_interval_ms=self.heartbeat_interval_ms,
                rebalance_timeout_ms=self.rebalance_timeout_ms,
            )
        return opts

    def admin_options(self) -> dict[str, Any]:
        """Return the options of an admin client."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client("admin"),
            "request_timeout_ms": self.request_timeout_ms,
            **self.security.client_options(),
        }

    def faust_options(self) -> dict[str, Any]:
        """Return `faust.App` settings for this broker, client id, timeouts and acks."""
        session_s = self.session_timeout_ms / 1000.0
        return {
            "broker": [f"kafka://{b.strip()}" for b in self.bootstrap_servers.split(",")],
            "broker_client_id": self.client("streams"),
            "broker_session_timeout": session_s,
            "broker_heartbeat_interval": self.heartbeat_interval_ms / 1000.0,
            "broker_request_timeout": self.group_request_timeout_ms / 1000.0,
            "broker_rebalance_timeout": self.rebalance_timeout_ms / 1000.0,
            "producer_acks": -1,  # acks=all, as the bus's producers
            "broker_credentials": self.security.faust_credentials(),
        }
