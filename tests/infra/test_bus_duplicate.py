"""A record the broker answers as a duplicate, without an offset, is not reported delivered."""

from __future__ import annotations

import asyncio

import pytest

from infra.bus import KafkaBus, TopicSetting, UnconfirmedSendError
from tests.helpers import SettingsFactory
from tests.kit.durable import DurableBroker

pytestmark = [pytest.mark.kafka, pytest.mark.s3]


@pytest.mark.parametrize("many", [False, True], ids=["send", "send_many"])
def test_a_duplicate_answer_raises_naming_topic_and_partition(
    durable_broker: DurableBroker, make_settings: SettingsFactory, many: bool
) -> None:
    bus = KafkaBus(make_settings(KAFKA_BOOTSTRAP_SERVERS=durable_broker.address))
    topic = bus.topic("dupes")

    async def run() -> UnconfirmedSendError:
        await bus.ensure_topics([TopicSetting(topic, 1, {})])
        async with bus.producer() as producer:
            assert (await producer.send(topic, b"first"))[1] >= 0
            durable_broker.kill_after_saving_sequence(topic)
            with pytest.raises(UnconfirmedSendError) as caught:
                if many:
                    await producer.send_many(topic, [(None, b"second")])
                else:
                    await producer.send(topic, b"second")
            return caught.value

    error = asyncio.run(run())
    assert (error.topic, error.partitions, error.records) == (topic, [0], 1)
    assert topic in str(error) and "[0]" in str(error)
