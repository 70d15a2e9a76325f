"""True end offsets on the real broker: Tansu's ListOffsets answers short of the end.

Tansu answers the base offset + 1 of the first batch among those last modified at the
newest timestamp (`infra.offsets`): on memory storage (the session broker here) the
last batch's base + 1; on S3 storage, whose timestamps have whole seconds, the first
batch written in the last second + 1, which can be many batches short. Faust's table
recovery reads a changelog up to the end offset it is given; an end short of the
last records recovers stale state pieces (and the worker then skips, for good, the
records those pieces had not applied), so the probe must find the true end, also
when the broker answers slowly.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.bus import KafkaBus
from infra.settings import Settings
from streams.offsets import true_end_offsets
from tests.helpers import SettingsFactory, unique
from tests.kit.faults import ProxyKit


async def _two_batches(bootstrap: str, topic: str) -> TopicPartition:
    """Produce 10 then 7 records, each group as one batch; return the partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    await producer.start()
    try:
        for n in (10, 7):
            batch = producer.create_batch()
            for i in range(n):
                batch.append(key=None, value=b"v%d" % i, timestamp=None)
            batch.close()
            await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()
    return TopicPartition(topic, 0)


async def _reported_end(bootstrap: str, tp: TopicPartition) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


def _settings(make_settings: SettingsFactory, bootstrap: str | None = None) -> Settings:
    overrides = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap} if bootstrap else {}
    return make_settings(kafka=True, **overrides)


def test_the_probe_finds_the_end_listoffsets_misses(make_settings: SettingsFactory) -> None:
    settings = _settings(make_settings)
    bus = KafkaBus(settings)

    async def run() -> tuple[int, int]:
        tp = await _two_batches(settings.kafka_bootstrap_servers, unique("end"))
        reported = await _reported_end(settings.kafka_bootstrap_servers, tp)
        return reported, (await true_end_offsets(bus, [tp], {tp: reported}))[tp]

    reported, end = asyncio.run(run())
    assert end == 17
    assert 11 <= reported <= 17  # Tansu on memory storage: 11 (last batch's base + 1); Kafka: 17


def test_the_probe_waits_for_a_slow_broker(
    make_settings: SettingsFactory, fault_proxies: ProxyKit, tmp_path: Path
) -> None:
    broker = fault_proxies.broker(tmp_path)
    settings = _settings(make_settings, broker.bootstrap)
    topic = unique("slow")

    async def run() -> int:
        tp = await _two_batches(broker.bootstrap, topic)
        reported = await _reported_end(broker.bootstrap, tp)
        # each chunk waits 0.7 s: the probe's connect, metadata and fetch take > 4 s
        broker.proxy.set("slow", latency_ms=700)
        return (await true_end_offsets(KafkaBus(settings), [tp], {tp: reported}))[tp]

    assert asyncio.run(run()) == 17
