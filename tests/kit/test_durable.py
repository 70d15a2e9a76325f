"""The durable broker keeps every record, committed offset and topic across a kill -9."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from infra.bus import KafkaBus, TopicSetting
from tests.helpers import SettingsFactory
from tests.kit.durable import DurableBroker


async def _read_all(bus: KafkaBus, topic: str, expected: int) -> list[bytes]:
    reader = await bus.consumer((), None).start()
    try:
        tp = TopicPartition(topic, 0)
        reader.raw.assign([tp])
        await reader.raw.seek_to_beginning(tp)
        out: list[bytes] = []
        for _ in range(100):
            out += [r.value or b"" for r in await reader.poll(200)]
            if len(out) >= expected:
                break
        return out
    finally:
        await reader.stop()


def test_a_killed_durable_broker_comes_back_with_every_record_and_offset(
    durable_broker: DurableBroker, make_settings: SettingsFactory
) -> None:
    settings = make_settings(KAFKA_BOOTSTRAP_SERVERS=durable_broker.address)
    bus = KafkaBus(settings)
    topic = bus.topic("durable")
    values = [f"record-{i}".encode() for i in range(300)]

    async def before() -> None:
        await bus.ensure_topics([TopicSetting(topic, 1, {})])
        async with bus.producer() as producer:
            await producer.send_many(topic, [(None, v) for v in values])
        async with bus.consumer((), "durable-group") as group:  # assigned: no group join
            group.raw.assign([TopicPartition(topic, 0)])
            await group.commit({(topic, 0): 123})

    async def after() -> tuple[list[bytes], int | None]:
        records = await _read_all(bus, topic, len(values))
        async with bus.consumer((), "durable-group") as group:
            group.raw.assign([TopicPartition(topic, 0)])
            committed = await group.committed(topic, 0)
        return records, committed

    asyncio.run(before())
    starts = durable_broker.starts
    durable_broker.restart(hard=True)  # SIGKILL: no shutdown hook runs
    assert durable_broker.starts == starts + 1 and durable_broker.alive()
    records, committed = asyncio.run(after())
    assert records == values
    assert committed == 123
