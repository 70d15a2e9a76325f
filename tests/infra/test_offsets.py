"""Reading partitions to their true end on the durable broker (Tansu on S3 storage).

Its ListOffsets(latest) answers the first batch written in the newest second + 1
(S3's LastModified has whole seconds), and with S3 slow a fetch answers with the few
batches it read within its wait: a reader that stops at ListOffsets' end counts short.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka import TopicPartition

from infra.bus import KafkaBus, TopicSetting
from infra.faultproxy import FaultProxy
from infra.offsets import read_to_end
from tests.helpers import SettingsFactory
from tests.kit.durable import DurableBroker

pytestmark = [pytest.mark.kafka, pytest.mark.s3]

#: how many batches ListOffsets must answer short of the end for a burst to count
SHORT_BATCHES = 10
#: each S3 request of the broker waits this long: a fetch reads a few batches in its wait
SLOW_S3_MS = 40


async def write_short_burst(broker: DurableBroker, topic: str) -> tuple[list[bytes], int, int]:
    """Write single-record batches until ListOffsets answers `SHORT_BATCHES` or more short.

    Return the values, ListOffsets' end and the true end.
    """

    def batch(attempt: int) -> list[bytes]:
        return [f"{topic}-{24 * attempt + i}".encode() for i in range(24)]

    return await broker.write_short_burst(topic, batch, SHORT_BATCHES)


def test_listoffsets_answers_short_and_read_to_end_reads_every_record(
    proxied_durable_broker: tuple[DurableBroker, FaultProxy], make_settings: SettingsFactory
) -> None:
    broker, s3 = proxied_durable_broker
    bus = KafkaBus(make_settings(KAFKA_BOOTSTRAP_SERVERS=broker.address))
    topic = bus.topic("bursts")
    tp = TopicPartition(topic, 0)

    async def run() -> tuple[list[bytes], int, int, list[bytes], dict[str, int]]:
        await bus.ensure_topics([TopicSetting(topic, 1, {})])
        values, reported, end = await write_short_burst(broker, topic)
        s3.set("slow", latency_ms=SLOW_S3_MS)
        read: list[bytes] = []
        ends = await read_to_end(bus, [tp], lambda msgs: read.extend(m.value for m in msgs))
        assert ends == {tp: end}
        return values, reported, end, read, await bus.count_records([topic])

    values, reported, end, read, counted = asyncio.run(run())
    assert end == len(values) and reported <= end - SHORT_BATCHES
    assert read == values
    assert counted == {topic: len(values)}


def test_offsets_the_broker_never_wrote_end_the_read_after_idle(
    durable_broker: DurableBroker, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bus = KafkaBus(make_settings(KAFKA_BOOTSTRAP_SERVERS=durable_broker.address))
    topic = bus.topic("gaps")
    tp = TopicPartition(topic, 0)
    values = [b"a", b"b", b"c"]

    async def run() -> tuple[dict[TopicPartition, int], list[bytes]]:
        await bus.ensure_topics([TopicSetting(topic, 1, {})])
        await durable_broker.write_burst(topic, values)
        durable_broker.kill_after_allocating_offsets(topic, 0, 4)
        read: list[bytes] = []
        ends = await read_to_end(
            bus, [tp], lambda msgs: read.extend(m.value for m in msgs), idle_s=1.0
        )
        return ends, read

    with caplog.at_level(logging.WARNING, logger="infra.offsets"):
        ends, read = asyncio.run(run())
    assert ends == {tp: 7}
    assert read == values
    assert "offsets 3..6 hold no records" in caplog.text
