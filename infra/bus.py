"""The Kafka bus: every Kafka client of tradeloop is built here from one `KafkaConnection`.

Producers are idempotent (acks=all), consumers commit only when asked, the admin
client creates topics. The connection (brokers, timeouts, TLS and SASL) and its
errors are in `infra.kafka_connection`; `KafkaConnection.faust_options()` gives the
streams worker's Faust app the same broker, client id, timeouts and security.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from infra import kafka_compat as _kafka_compat  # noqa: F401  (registers InitProducerId v3)
from infra.contracts.topics import TOPICS
from infra.kafka_connection import BrokerUnavailableError, KafkaConnection, start_error
from infra.offsets import read_to_end
from infra.settings import Settings, get_settings

__all__ = [
    "BusConsumer",
    "BusProducer",
    "KafkaBus",
    "Record",
    "TopicSetting",
    "UnconfirmedSendError",
    "next_offsets",
    "topic_settings",
]


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
            error = start_error(self._bootstrap, self._options, exc)
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
            error = start_error(self._bootstrap, self._options, exc)
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
            error = start_error(self.bootstrap, opts, exc)
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
