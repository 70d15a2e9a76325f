"""The Kafka bus: every Kafka client of tradeloop is built here from one `KafkaConnection`.

Producers are idempotent (acks=all), consumers commit only when asked, the admin
client creates topics; `KafkaConnection.faust_options()` gives the streams worker's
Faust app the same broker, client id, timeouts and security. `KafkaSecurity` holds
TLS and SASL (SCRAM) settings; every client gets them from the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr

from infra import kafka_compat as _kafka_compat  # noqa: F401  (registers InitProducerId v3)
from infra.contracts.topics import TOPICS
from infra.offsets import read_to_end
from infra.settings import KafkaSettings, Settings, get_settings

__all__ = [
    "BrokerUnavailableError",
    "BusConsumer",
    "BusProducer",
    "KafkaAuthError",
    "KafkaBus",
    "KafkaConnection",
    "KafkaSecurity",
    "KafkaSecurityError",
    "Record",
    "TopicSetting",
    "UnconfirmedSendError",
    "next_offsets",
    "topic_settings",
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


class UnconfirmedSendError(RuntimeError):
    """Raise when the broker answered records as sent before, without their offsets.

    Tansu saves a producer's sequence before the batch: killed in between, it answers a
    retried batch as a duplicate (aiokafka reports it sent, offset -1) though it may never
    have written it. Such records are not known to be delivered.
    """

    def __init__(self, topic: str, partitions: Iterable[int], records: int) -> None:
        self.topic = topic
        self.partitions = sorted(set(partitions))
        self.records = records
        super().__init__(
            f"the broker answered {records} records to {topic}{self.partitions} as sent "
            "before, without offsets: not known to be delivered"
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


def _start_error(bootstrap: str, options: Mapping[str, Any], exc: Exception) -> Exception | None:
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


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class TopicSetting:
    """A topic to create: full name, partitions and broker config."""

    name: str
    partitions: int
    config: Mapping[str, str]


class BusProducer:
    """An idempotent (acks=all) producer; `send` returns once the broker acknowledged."""

    def __init__(self, options: dict[str, Any], bootstrap: str) -> None:
        self._options = options
        self._bootstrap = bootstrap
        self._producer: AIOKafkaProducer = None  # type: ignore[assignment]  # set by start()

    async def start(self) -> BusProducer:
        """Connect to the broker, or raise `BrokerUnavailableError`."""
        self._producer = AIOKafkaProducer(**self._options)
        try:
            await self._producer.start()
        except Exception as exc:
            await self._producer.stop()
            error = _start_error(self._bootstrap, self._options, exc)
            if error is None:
                raise
            raise error from None
        return self

    async def stop(self) -> None:
        """Flush and disconnect."""
        await self._producer.stop()

    async def __aenter__(self) -> BusProducer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> tuple[int, int]:
        """Send one record and wait for the ack; return (partition, offset).

        Raise `UnconfirmedSendError` if the broker answered it without an offset.
        """
        meta = await self._producer.send_and_wait(topic, value=value, key=key)
        return _delivered(topic, [(meta.partition, meta.offset)])[0]

    async def send_many(
        self, topic: str, records: Iterable[tuple[bytes | None, bytes]]
    ) -> list[tuple[int, int]]:
        """Send records pipelined, in order, and wait for every ack.

        Raise `UnconfirmedSendError` if any record was answered without an offset.
        """
        futures = [await self._producer.send(topic, value=v, key=k) for k, v in records]
        metas = await asyncio.gather(*futures)
        return _delivered(topic, [(m.partition, m.offset) for m in metas])

    async def flush(self) -> None:
        """Wait until every buffered record is acknowledged."""
        await self._producer.flush()


def _delivered(topic: str, answers: list[tuple[int, int]]) -> list[tuple[int, int]]:
    unproven = [partition for partition, offset in answers if offset < 0]
    if unproven:
        raise UnconfirmedSendError(topic, unproven, len(unproven))
    return answers


class BusConsumer:
    """A consumer with manual commits; nothing is committed unless asked."""

    def __init__(
        self,
        topics: tuple[str, ...],
        options: dict[str, Any],
        bootstrap: str,
        listener: ConsumerRebalanceListener | None = None,
    ) -> None:
        self._topics = topics
        self._options = options
        self._bootstrap = bootstrap
        self._listener = listener
        self._consumer: AIOKafkaConsumer = None  # type: ignore[assignment]  # set by start()

    @property
    def options(self) -> dict[str, Any]:
        """Return the aiokafka options this consumer is built with."""
        return dict(self._options)

    @property
    def raw(self) -> AIOKafkaConsumer:
        """Return the underlying aiokafka consumer."""
        return self._consumer

    async def start(self) -> BusConsumer:
        """Connect and join the group, or raise `BrokerUnavailableError`."""
        if self._listener is None:
            self._consumer = AIOKafkaConsumer(*self._topics, **self._options)
        else:
            self._consumer = AIOKafkaConsumer(**self._options)
            self._consumer.subscribe(topics=list(self._topics), listener=self._listener)
        try:
            await self._consumer.start()
        except Exception as exc:
            await self._consumer.stop()
            error = _start_error(self._bootstrap, self._options, exc)
            if error is None:
                raise
            raise error from None
        return self

    async def stop(self) -> None:
        """Leave the group and disconnect (commits nothing)."""
        await self._consumer.stop()

    async def __aenter__(self) -> BusConsumer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def poll(self, timeout_ms: int = 1000, max_records: int | None = None) -> list[Record]:
        """Return the next batch of records across assigned partitions (may be empty)."""
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        out: list[Record] = []
        for tp, msgs in batches.items():
            out.extend(
                Record(tp.topic, tp.partition, m.offset, m.key, m.value, m.timestamp) for m in msgs
            )
        return out

    async def commit(self, offsets: Mapping[tuple[str, int], int] | None = None) -> None:
        """Commit next-offsets per (topic, partition), or the current positions."""
        if offsets is None:
            await self._consumer.commit()
            return
        await self._consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})

    async def committed(self, topic: str, partition: int) -> int | None:
        """Return the committed next-offset of a partition, if any."""
        return await self._consumer.committed(TopicPartition(topic, partition))


def next_offsets(records: Iterable[Record]) -> dict[tuple[str, int], int]:
    """Return the offsets to commit after processing these records."""
    out: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        out[key] = max(out.get(key, 0), r.offset + 1)
    return out


class KafkaBus:
    """Factory of producers, consumers, admin clients and topics for one broker and prefix."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        bootstrap: str | None = None,
        prefix: str | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.connection = KafkaConnection.from_settings(self.settings, bootstrap=bootstrap)
        self.bootstrap = self.connection.bootstrap_servers
        self.prefix = self.settings.topic_prefix if prefix is None else prefix

    def topic(self, name: str) -> str:
        """Return the full topic name of a short name (`bars` -> `tradeloop.bars`)."""
        return f"{self.prefix}{name}"

    def producer(self, **overrides: Any) -> BusProducer:
        """Return an unstarted idempotent producer."""
        opts = self.connection.producer_options()
        opts.update(overrides)
        return BusProducer(opts, self.bootstrap)

    def consumer(
        self,
        topics: Iterable[str],
        group_id: str | None,
        *,
        from_beginning: bool = True,
        listener: ConsumerRebalanceListener | None = None,
        **overrides: Any,
    ) -> BusConsumer:
        """Return an unstarted manual-commit consumer of full topic names.

        No topics and no group: a consumer that reads what it is assigned.
        """
        opts = self.connection.consumer_options(group_id, from_beginning=from_beginning)
        opts.update(overrides)
        return BusConsumer(tuple(topics), opts, self.bootstrap, listener)

    async def admin(self, **overrides: Any) -> AIOKafkaAdminClient:
        """Return a started admin client (the caller closes it), or raise `BrokerUnavailableError`."""
        opts = self.connection.admin_options()
        opts.update(overrides)
        admin = AIOKafkaAdminClient(**opts)
        try:
            await admin.start()
        except Exception as exc:
            await admin.close()
            error = _start_error(self.bootstrap, opts, exc)
            if error is None:
                raise
            raise error from None
        return admin

    def faust_options(self) -> dict[str, Any]:
        """Return the Kafka settings of a `faust.App` on this bus's broker."""
        return self.connection.faust_options()

    async def ensure_topics(self, topics: Iterable[TopicSetting]) -> list[str]:
        """Create missing topics with their configs; return the names created.

        The topic specs live with the contracts: `topic_settings(bus)` below.
        """
        wanted = list(topics)
        admin = await self.admin()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in wanted if t.name not in existing]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [
                            NewTopic(t.name, t.partitions, 1, topic_configs=dict(t.config))
                            for t in missing
                        ]
                    )
            return [t.name for t in missing]
        finally:
            await admin.close()

    async def list_topics(self) -> list[str]:
        """Return the broker's topic names."""
        admin = await self.admin()
        try:
            return list(await admin.list_topics())
        finally:
            await admin.close()

    async def count_records(self, names: Iterable[str]) -> dict[str, int]:
        """Count the records in each topic by reading it from the beginning to its true end.

        Exact on every broker (offset arithmetic is not: gaps, compaction, Tansu's
        log-start offsets and its short ListOffsets answers, see `infra.offsets`);
        meant for demo and audit sizes, not huge topics.
        """
        return {name: await self._count(name) for name in names}

    async def _count(self, name: str) -> int:
        reader = await self.consumer((), None, from_beginning=False).start()
        try:
            await reader.raw.topics()  # loads metadata of every topic
            partitions = reader.raw.partitions_for_topic(name) or ()
        finally:
            await reader.stop()
        count = 0

        def add(records: list[Any]) -> None:
            nonlocal count
            count += len(records)

        await read_to_end(self, [TopicPartition(name, p) for p in partitions], add)
        return count

    async def check(self) -> None:
        """Raise `BrokerUnavailableError` unless the broker answers."""
        try:
            await self.list_topics()
        except KafkaError as exc:
            raise BrokerUnavailableError(self.bootstrap, exc) from None


def topic_settings(bus: KafkaBus, names: Iterable[str] | None = None) -> list[TopicSetting]:
    """Return the `TopicSetting`s of the named topics (all by default) for a bus."""
    chosen = list(names) if names is not None else list(TOPICS)
    out = []
    for name in chosen:
        spec = TOPICS[name]
        partitions = 1 if spec.compacted else bus.settings.topic_partitions
        out.append(
            TopicSetting(bus.topic(name), partitions, spec.config(bus.settings.retention_ms))
        )
    return out
