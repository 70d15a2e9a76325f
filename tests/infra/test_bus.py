"""The Kafka bus against the real Tansu broker."""

from __future__ import annotations

import ast
import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from aiokafka import ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTopicPartition
from confluent_kafka import Consumer, TopicPartition

from infra.bus import KafkaBus, next_offsets, topic_settings
from infra.contracts import TOPICS, Bar, decode, encode, event_key
from infra.kafka_connection import BrokerUnavailableError, KafkaConnection
from infra.settings import KafkaSettings, Settings
from infra.stack import free_port
from tests import ROOT
from tests.factories import bar
from tests.helpers import unique

pytestmark = pytest.mark.kafka

RUNTIME_PACKAGES = ("infra", "streams", "features", "training", "trader")
KAFKA_CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
BUS = ROOT / "infra" / "bus.py"


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


def _client_constructions(source: str, where: str) -> list[str]:
    """Return the places in `source` that call an aiokafka client class (also renamed)."""
    tree = ast.parse(source, where)
    names = set(KAFKA_CLIENTS)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom | ast.Import):
            names |= {a.asname for a in node.names if a.asname and a.name in KAFKA_CLIENTS}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called in names:
                found.append(f"{where}:{node.lineno} {called}(...)")
    return found


def _runtime_sources() -> Iterable[Path]:
    for package in RUNTIME_PACKAGES:
        yield from (p for p in (ROOT / package).rglob("*.py") if p != BUS)


def test_only_the_bus_constructs_kafka_clients() -> None:
    found = [
        hit
        for path in _runtime_sources()
        for hit in _client_constructions(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert found == []
    assert len(_client_constructions(BUS.read_text(), "infra/bus.py")) >= 3  # the scan sees them


def test_the_scan_finds_planted_constructions() -> None:
    planted = (
        "import aiokafka\n"
        "from aiokafka.admin import AIOKafkaAdminClient as Admin\n"
        "a = aiokafka.AIOKafkaConsumer(bootstrap_servers='x')\n"
        "b = Admin(bootstrap_servers='x')\n"
    )
    assert len(_client_constructions(planted, "planted.py")) == 2


def test_the_connection_comes_from_the_kafka_settings() -> None:
    settings = KafkaSettings(
        KAFKA_BOOTSTRAP_SERVERS="h1:9092, h2:9092",
        KAFKA_REQUEST_TIMEOUT_MS=4000,
        KAFKA_SESSION_TIMEOUT_MS=12_000,
    )
    conn = KafkaConnection.from_settings(settings)
    assert conn == KafkaConnection("h1:9092, h2:9092", "tradeloop", 4000, 12_000)
    assert KafkaConnection.from_settings(settings, bootstrap="o:1").bootstrap_servers == "o:1"
    assert (conn.heartbeat_interval_ms, conn.group_request_timeout_ms) == (2400, 17_000)
    assert conn.rebalance_timeout_ms == 36_000
    producer = conn.producer_options()
    assert producer["acks"] == "all" and producer["enable_idempotence"] is True
    assert producer["request_timeout_ms"] == 4000 and producer["client_id"] == "tradeloop-producer"
    group = conn.consumer_options("g", from_beginning=True)
    assert group["session_timeout_ms"] == 12_000 and group["heartbeat_interval_ms"] == 2400
    assert group["enable_auto_commit"] is False and group["auto_offset_reset"] == "earliest"
    alone = conn.consumer_options(None, from_beginning=False)
    assert alone["group_id"] is None and "session_timeout_ms" not in alone
    assert alone["auto_offset_reset"] == "latest"
    for opts in (producer, group, alone, conn.admin_options()):
        assert opts["bootstrap_servers"] == "h1:9092, h2:9092"
    assert conn.admin_options()["request_timeout_ms"] == 4000


def test_faust_gets_the_same_connection() -> None:
    import faust

    conn = KafkaConnection("h1:9092,h2:9093", "tradeloop", 4000, 12_000)
    app = faust.App("bus-test", **conn.faust_options())
    assert [str(u) for u in app.conf.broker] == ["kafka://h1:9092", "kafka://h2:9093"]
    assert app.conf.broker_client_id == "tradeloop-streams"
    assert app.conf.broker_session_timeout == 12.0
    assert app.conf.broker_heartbeat_interval == 2.4
    assert app.conf.broker_request_timeout == 17.0
    assert app.conf.broker_rebalance_timeout == 36.0
    assert app.conf.producer_acks == -1


class _Assignments(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.assigned: set[KafkaTopicPartition] = set()

    async def on_partitions_revoked(self, revoked: object) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Iterable[KafkaTopicPartition]) -> None:
        self.assigned |= set(assigned)


def test_a_group_consumer_with_a_listener_is_told_its_partitions(bus: KafkaBus) -> None:
    topic = bus.topic("bars")
    asyncio.run(bus.ensure_topics(topic_settings(bus, ["bars"])))
    events = [bar(i) for i in range(12)]
    asyncio.run(_produce(bus, topic, events))
    listener = _Assignments()

    async def consume() -> list[Bar]:
        got: list[Bar] = []
        consumer = bus.consumer([topic], unique("g"), listener=listener, client_id="t-sink")
        assert consumer.options["client_id"] == "t-sink"
        async with consumer:
            deadline = time.monotonic() + 20
            while len(got) < len(events) and time.monotonic() < deadline:
                got.extend(decode(r.value or b"", Bar) for r in await consumer.poll(500))
        return got

    got = asyncio.run(consume())
    assert sorted(e.event_id for e in got) == sorted(e.event_id for e in events)
    want = {KafkaTopicPartition(topic, p) for p in range(bus.settings.topic_partitions)}
    assert listener.assigned == want


def test_the_admin_client_lists_topics_and_reports_an_absent_broker(bus: KafkaBus) -> None:
    asyncio.run(bus.ensure_topics(topic_settings(bus, ["drift"])))

    async def listed(b: KafkaBus) -> list[str]:
        admin = await b.admin()
        try:
            return list(await admin.list_topics())
        finally:
            await admin.close()

    assert bus.topic("drift") in asyncio.run(listed(bus))
    absent = KafkaBus(Settings(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}"))
    with pytest.raises(BrokerUnavailableError):
        asyncio.run(listed(absent))
    with pytest.raises(BrokerUnavailableError):
        asyncio.run(absent.consumer((), None).start())
