"""The Kafka bus against the real Tansu broker."""

from __future__ import annotations

import asyncio
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from infra.bus import BrokerUnavailableError, KafkaBus, next_offsets, topic_settings
from infra.contracts import TOPICS, Bar, decode, encode, event_key
from infra.settings import Settings
from infra.stack import free_port
from tests.factories import bar
from tests.helpers import unique

pytestmark = pytest.mark.kafka


async def _produce(bus: KafkaBus, topic: str, events: list[Bar]) -> None:
    async with bus.producer() as producer:
        await producer.send_many(topic, [(event_key(e), encode(e)) for e in events])


async def _consume(
    bus: KafkaBus, topic: str, group: str, want: int, timeout_s: float = 20.0
) -> list[Bar]:
    got: list[Bar] = []
    async with bus.consumer([topic], group) as consumer:
        deadline = time.monotonic() + timeout_s
        while len(got) < want and time.monotonic() < deadline:
            records = await consumer.poll(timeout_ms=500)
            got.extend(decode(r.value or b"", Bar) for r in records)
            if records:
                await consumer.commit(next_offsets(records))
    return got


def test_topics_are_created_with_their_configs(bus: KafkaBus) -> None:
    created = asyncio.run(bus.ensure_topics(topic_settings(bus)))
    assert sorted(created) == sorted(bus.topic(n) for n in TOPICS)
    assert asyncio.run(bus.ensure_topics(topic_settings(bus))) == []  # idempotent
    settings = {t.name: t for t in topic_settings(bus)}
    assert settings[bus.topic("models")].config == {"cleanup.policy": "compact"}
    assert settings[bus.topic("bars")].config["cleanup.policy"] == "delete"


def test_produce_then_consume_with_a_group(bus: KafkaBus) -> None:
    asyncio.run(bus.ensure_topics(topic_settings(bus, ["bars"])))
    events = [bar(i, symbol="ES" if i % 2 else "NQ") for i in range(50)]
    asyncio.run(_produce(bus, bus.topic("bars"), events))
    got = asyncio.run(_consume(bus, bus.topic("bars"), unique("g"), want=50))
    assert sorted(e.event_id for e in got) == sorted(e.event_id for e in events)
    by_symbol = [e for e in got if e.symbol == "ES"]
    assert [e.ts_event for e in by_symbol] == sorted(
        e.ts_event for e in by_symbol
    )  # key order kept


def test_restarted_consumer_resumes_from_committed_offset(bus: KafkaBus) -> None:
    topic = bus.topic("bars")
    asyncio.run(bus.ensure_topics(topic_settings(bus, ["bars"])))
    first = [bar(i) for i in range(20)]
    asyncio.run(_produce(bus, topic, first))
    group = unique("g")
    assert len(asyncio.run(_consume(bus, topic, group, want=20))) == 20
    second = [bar(100 + i) for i in range(7)]
    asyncio.run(_produce(bus, topic, second))
    resumed = asyncio.run(_consume(bus, topic, group, want=7))
    assert [e.event_id for e in resumed] == [e.event_id for e in second]


def test_a_second_client_library_reads_what_the_bus_wrote(bus: KafkaBus) -> None:
    topic = bus.topic("bars")
    asyncio.run(bus.ensure_topics(topic_settings(bus, ["bars"])))
    events = [bar(i) for i in range(10)]
    asyncio.run(_produce(bus, topic, events))
    consumer = Consumer(
        {"bootstrap.servers": bus.bootstrap, "group.id": unique("ck"), "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(bus.settings.topic_partitions)])
    got = []
    deadline = time.monotonic() + 15
    while len(got) < 10 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            got.append(decode(msg.value(), Bar))
    consumer.close()
    assert sorted(e.event_id for e in got) == sorted(e.event_id for e in events)


def test_unreachable_broker_gives_one_clear_line() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    bus = KafkaBus(Settings(KAFKA_BOOTSTRAP_SERVERS=bootstrap))
    with pytest.raises(BrokerUnavailableError) as info:
        asyncio.run(bus.producer().start())
    message = str(info.value)
    assert bootstrap in message and "tradeloop stack up" in message and "\n" not in message
    with pytest.raises(BrokerUnavailableError):
        asyncio.run(bus.check())


def test_count_records_is_exact_across_empty_and_full_topics(bus: KafkaBus) -> None:
    asyncio.run(bus.ensure_topics(topic_settings(bus, ["bars", "signals", "outcomes"])))
    asyncio.run(
        _produce(
            bus, bus.topic("signals"), [bar(i, symbol="ES" if i % 2 else "NQ") for i in range(7)]
        )
    )
    counts = asyncio.run(bus.count_records([bus.topic(t) for t in ("bars", "signals", "outcomes")]))
    assert counts == {bus.topic("bars"): 0, bus.topic("signals"): 7, bus.topic("outcomes"): 0}
