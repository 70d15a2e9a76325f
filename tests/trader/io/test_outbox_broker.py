"""The outbox against the durable broker's answers (Tansu on S3 storage) after a kill.

The restart dedupe must see every record already on Kafka, though ListOffsets answers
short; and a batch the broker answers as a duplicate is not taken as delivered, since
Tansu saves a producer's sequence before it writes the batch.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from infra.bus import KafkaBus, topic_settings
from infra.faultproxy import FaultProxy
from infra.offsets import read_to_end
from tests.helpers import SettingsFactory
from tests.infra.test_offsets import SHORT_BATCHES, SLOW_S3_MS, write_short_burst
from tests.kit.durable import DurableBroker
from trader.io.drainer import OutboxDrainer
from trader.io.outbox import Outbox

pytestmark = [pytest.mark.kafka, pytest.mark.s3]


async def _values(bus: KafkaBus, topic: str) -> list[bytes]:
    reader = await bus.consumer((), None).start()
    try:
        await reader.raw.topics()
        parts = reader.raw.partitions_for_topic(topic) or set()
    finally:
        await reader.stop()
    out: list[bytes] = []
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    await read_to_end(bus, tps, lambda msgs: out.extend(m.value or b"" for m in msgs))
    return out


def test_the_restart_dedupe_finds_every_record_of_a_burst(
    proxied_durable_broker: tuple[DurableBroker, FaultProxy],
    make_settings: SettingsFactory,
    tmp_path: Path,
) -> None:
    """The spooled records went out, their acks were lost: none is sent again."""
    broker, s3 = proxied_durable_broker
    bus = KafkaBus(make_settings(KAFKA_BOOTSTRAP_SERVERS=broker.address))
    topic = bus.topic("bars")
    outbox = Outbox(tmp_path / "outbox")
    drainer = OutboxDrainer(outbox, bus)

    async def run() -> tuple[int, int, int]:
        await bus.ensure_topics(topic_settings(bus, ["bars"]))
        values, reported, end = await write_short_burst(broker, topic)
        for value in values:
            outbox.append("bars", None, value)
        s3.set("slow", latency_ms=SLOW_S3_MS)
        return await drainer.skip_already_sent(), reported, end

    skipped, reported, end = asyncio.run(run())
    assert reported <= end - SHORT_BATCHES  # a reader stopping at ListOffsets misses some
    assert skipped == end
    assert outbox.depth == 0


def test_a_batch_answered_as_a_duplicate_is_looked_for_and_sent_again(
    durable_broker: DurableBroker, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    bus = KafkaBus(make_settings(KAFKA_BOOTSTRAP_SERVERS=durable_broker.address))
    topic = bus.topic("bars")
    outbox = Outbox(tmp_path / "outbox")
    drainer = OutboxDrainer(outbox, bus, retry_s=0.2, send_timeout_s=10.0).start()
    try:
        outbox.append("bars", b"ES", b"first")
        drainer.notify()
        assert drainer.wait_drained(60)
        durable_broker.kill_after_saving_sequence(topic)
        outbox.append("bars", b"ES", b"second")
        drainer.notify()
        assert drainer.wait_drained(60)
    finally:
        assert drainer.stop(10)
    assert drainer.failures >= 1  # the duplicate answer, then a fresh producer
    assert asyncio.run(_values(bus, topic)) == [b"first", b"second"]
