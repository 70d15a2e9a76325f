"""Seek targets: after a seek, a partition delivers nothing until the record the seek went to."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.seeks import SeekTargets, seek_sources
from tests.helpers import SettingsFactory, unique


def test_records_fetched_before_the_seek_are_dropped_until_the_target_arrives() -> None:
    targets = SeekTargets(wait_s=60)
    targets.set("bars", 0, 0)
    assert [targets.admit("bars", 0, o) for o in (170, 171, 172)] == [False] * 3
    assert targets.pending("bars", 0) == 0
    assert targets.admit("bars", 0, 0)  # the seek's first record
    assert all(targets.admit("bars", 0, o) for o in (1, 2, 170))  # then everything in order
    assert targets.stale_dropped == 3 and not targets


def test_other_partitions_are_not_held_back() -> None:
    targets = SeekTargets(wait_s=60)
    targets.set("bars", 0, 5)
    assert targets.admit("bars", 1, 900)
    assert targets.admit("signals", 0, 900)
    assert not targets.admit("bars", 0, 4)  # below the target: an old fetch too
    assert targets.pending("bars", 0) == 5


def test_a_target_that_never_arrives_is_given_up_after_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr("streams.seeks.time.monotonic", lambda: clock[0])
    targets = SeekTargets(wait_s=30)
    targets.set("bars", 0, 10)  # retention deleted 10..19 meanwhile
    assert not targets.admit("bars", 0, 20)
    clock[0] += 31
    assert targets.admit("bars", 0, 20)
    assert targets.gaps_accepted == 1 and targets.pending("bars", 0) is None


def test_records_delivered_but_not_folded_for_two_checks_are_stalled() -> None:
    targets = SeekTargets(wait_s=60)
    targets.set("bars", 0, 10)
    assert targets.admit("bars", 0, 10)
    for offset in (10, 11):
        assert targets.missing("bars", 0, offset) is None  # folded in order
    targets.delivered[("bars", 0)] = 15  # 12..15 handed to the agent
    assert targets.stalled() == []  # first look: the agent may still be busy
    assert targets.missing("bars", 0, 12) is None
    assert targets.stalled() == []  # it folded one meanwhile: not stalled
    assert targets.stalled() == [("bars", 0, 13)]  # no fold since: read 13.. again
    assert targets.needs_seek("bars", 0, 13)  # no seek pending
    targets.set("bars", 0, 13)
    assert not targets.needs_seek("bars", 0, 13)  # that seek is on its way
    assert targets.needs_seek("bars", 0, 12)
    assert targets.stalled() == []  # a target is pending


def test_a_gap_given_up_on_moves_the_next_fold_past_it(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("streams.seeks.time.monotonic", lambda: clock[0])
    targets = SeekTargets(wait_s=30)
    targets.set("bars", 0, 10)
    clock[0] += 31
    assert targets.admit("bars", 0, 20)  # retention deleted 10..19
    assert targets.missing("bars", 0, 20) is None  # not a hole to read again
    assert targets.cap("bars", 0, 25) == 21


def test_a_new_seek_replaces_the_old_target() -> None:
    targets = SeekTargets(wait_s=60)
    targets.set("bars", 0, 50)
    targets.set("bars", 0, 8)
    assert not targets.admit("bars", 0, 50)
    assert targets.admit("bars", 0, 8)


def test_seek_sources_on_the_broker(make_settings: SettingsFactory) -> None:
    """A partition with a committed offset goes back to it; one without goes to its beginning
    (aiokafka's own `seek_to_committed` leaves that one where a fetch moved it)."""
    settings = make_settings(kafka=True)
    bootstrap = settings.kafka_bootstrap_servers
    topic, changelog = unique("src"), unique("cl")

    async def run() -> tuple[dict[int, int], SeekTargets]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for p in (0, 1):
                for i in range(20):
                    await producer.send_and_wait(topic, b"%d" % i, partition=p)
            await producer.send_and_wait(changelog, b"piece", partition=0)
        finally:
            await producer.stop()
        tps = [TopicPartition(topic, 0), TopicPartition(topic, 1), TopicPartition(changelog, 0)]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=unique("g"), enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.commit({tps[0]: 7})
            for tp in tps:
                consumer.seek(tp, 15 if tp.topic == topic else 1)  # where a stale fetch left them
            targets = SeekTargets(wait_s=60)
            await seek_sources(consumer, {changelog}, targets)
            return {tp.partition: await consumer.position(tp) for tp in tps[:2]}, targets
        finally:
            await consumer.stop()

    positions, targets = asyncio.run(run())
    assert positions == {0: 7, 1: 0}
    assert targets.pending(topic, 0) == 7 and targets.pending(topic, 1) == 0
    assert targets.pending(changelog, 0) is None  # the recovery reads changelogs
