"""Replay the event lake (or a Kafka time range) through the worker's pure functions.

`--into features` folds every event with `process_record` (the agents' function)
into a fresh `StreamFeatureState` and pushes the latest value of every entity to the
Feast online store: the online store ends up exactly as the live worker left it.
`--into kafka` re-produces the raw events onto the topics (of this or another prefix).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from features.stream import StreamFeatureState
from infra.bus import KafkaBus, topic_settings
from infra.contracts import decode, event_key
from infra.lake import iter_payloads, read_topic
from infra.objectstore import store_for_uri
from infra.settings import Settings
from infra.timeutil import parse_time
from streams.offsets import true_end_offsets
from streams.online import OnlinePusher
from streams.processing import SOURCE_TOPICS, process_record

__all__ = [
    "ReplayResult",
    "kafka_records",
    "lake_records",
    "parse_time",
    "replay_into_features",
    "replay_into_kafka",
]

Record = tuple[str, int, int, bytes]  # short topic, partition, offset, value
Progress = Callable[[int], None]


@dataclass
class ReplayResult:
    """What a replay did."""

    events: int = 0
    dead_letters: int = 0
    outputs: int = 0
    rows_pushed: int = 0
    produced: int = 0
    state: StreamFeatureState = field(default_factory=StreamFeatureState)


def lake_count(
    settings: Settings, topics: Iterable[str], start: dt.datetime | None, end: dt.datetime | None
) -> int:
    """Return how many lake rows a replay will read."""
    store = store_for_uri(settings.lake, settings)
    return sum(
        read_topic(settings.lake, t, start, end, settings, store=store).num_rows for t in topics
    )


def lake_records(
    settings: Settings, topics: Iterable[str], start: dt.datetime | None, end: dt.datetime | None
) -> Iterator[Record]:
    """Yield lake records topic by topic, each in (partition, offset) order."""
    store = store_for_uri(settings.lake, settings)
    for short in topics:
        for partition, offset, body in iter_payloads(
            settings.lake, short, start, end, settings, store=store
        ):
            yield short, partition, offset, body


async def _kafka_records(
    settings: Settings, topics: list[str], start: dt.datetime | None, end: dt.datetime | None
) -> list[Record]:
    bus = KafkaBus(settings)
    reader = bus.consumer((), None, from_beginning=False, client_id=bus.connection.client("replay"))
    consumer = (await reader.start()).raw
    out: list[Record] = []
    try:
        for short in topics:
            full = settings.topic(short)
            parts = consumer.partitions_for_topic(full) or set()
            if not parts:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(full) or set(range(settings.topic_partitions))
            tps = [TopicPartition(full, p) for p in sorted(parts)]
            if not tps:
                continue
            consumer.assign(tps)
            begin = await consumer.beginning_offsets(tps)
            finish = await true_end_offsets(bus, tps, await consumer.end_offsets(tps))
            if start is not None:
                found = await consumer.offsets_for_times(
                    {tp: int(start.timestamp() * 1000) for tp in tps}
                )
                begin = {tp: (found[tp].offset if found.get(tp) else finish[tp]) for tp in tps}
            # the end is found by record timestamps below: some brokers answer
            # OffsetsForTimes with a batch's base offset, which may lie before it
            for tp in tps:
                if begin[tp] >= finish[tp]:
                    continue
                consumer.assign([tp])
                consumer.seek(tp, begin[tp])
                done = False
                while not done:
                    batch = await consumer.getmany(tp, timeout_ms=2000, max_records=5000)
                    msgs = batch.get(tp, [])
                    if not msgs:
                        break
                    for m in msgs:
                        if m.offset >= finish[tp]:
                            done = True
                            break
                        if start is not None and m.timestamp < int(start.timestamp() * 1000):
                            continue
                        if end is not None and m.timestamp >= int(end.timestamp() * 1000):
                            continue
                        out.append((short, tp.partition, m.offset, m.value or b""))
                    if msgs[-1].offset + 1 >= finish[tp]:
                        done = True
    finally:
        await reader.stop()
    return out


def kafka_records(
    settings: Settings, topics: Iterable[str], start: dt.datetime | None, end: dt.datetime | None
) -> list[Record]:
    """Return the records of a Kafka time range (by broker timestamp), per partition in order."""
    return asyncio.run(_kafka_records(settings, list(topics), start, end))


def replay_into_features(
    settings: Settings,
    records: Iterable[Record],
    *,
    store: Any | None = None,
    push: bool = True,
    progress: Progress | None = None,
) -> ReplayResult:
    """Fold records with the agents' function; push every entity's latest value online."""
    result = ReplayResult()
    pusher = None
    if push:
        if store is None:
            from features.store import TradeloopFeatureStore

            store = TradeloopFeatureStore(settings)
            store.apply(force=False)
        pusher = OnlinePusher(store)
    for short, partition, offset, value in records:
        done = process_record(
            result.state,
            short,
            settings.topic(short),
            partition,
            offset,
            None,
            value,
            consumer="replay",
        )
        result.events += 1
        if done.dead_letter is not None:
            result.dead_letters += 1
        result.outputs += len(done.outputs)
        if pusher is not None:
            pusher.add(done.outputs)
        if progress is not None:
            progress(1)
    if pusher is not None:
        result.rows_pushed = pusher.push(pusher.take())
    return result


def replay_into_kafka(
    settings: Settings,
    records: Iterable[Record],
    *,
    target_prefix: str | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Produce the raw events again (keyed as live), onto this or another prefix."""
    result = ReplayResult()
    bus = KafkaBus(settings, prefix=target_prefix)

    async def run() -> None:
        await bus.ensure_topics(topic_settings(bus, (*SOURCE_TOPICS, "features", "drift", "dlq")))
        async with bus.producer() as producer:
            chunk: dict[str, list[tuple[bytes | None, bytes]]] = {}
            for short, _, _, value in records:
                chunk.setdefault(short, []).append((event_key(decode(value)), value))
                result.events += 1
                if sum(len(v) for v in chunk.values()) >= 2000:
                    await _flush(producer, chunk)
            await _flush(producer, chunk)

    async def _flush(producer: Any, chunk: dict[str, list[tuple[bytes | None, bytes]]]) -> None:
        for short, recs in chunk.items():
            await producer.send_many(bus.topic(short), recs)
            result.produced += len(recs)
            if progress is not None:
                progress(len(recs))
        chunk.clear()

    asyncio.run(run())
    return result
