"""True end offsets, and a reader that reads partitions to them.

Tansu answers ListOffsets(latest) from a listing of its batch objects: the base
offset + 1 of the lowest-offset batch among those last modified in the newest
timestamp. S3 (and moto) give LastModified in whole seconds, so on S3 storage the
answer is the first batch written in the last second + 1, which can be many batches
short of the end; with memory storage it is the last batch's base offset + 1. Fetch
responses carry the right high watermark. `true_end_offsets` probes one fetch per
partition and takes the larger of the two answers (on Apache Kafka they agree);
`read_to_end` reads partitions up to those ends. A reader that stops at
`end_offsets` counts short on Tansu.

A broker killed between allocating a batch's offsets and writing the batch leaves
offsets that hold no records; when they are a partition's last, no fetch reaches the
high watermark. `read_to_end` ends such a partition once a fetch from its position has
returned nothing for `idle_s`, and says so in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

__all__ = ["EndOffsetUnknownError", "read_to_end", "read_topics_to_end", "true_end_offsets"]

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 120.0
#: How long a fetch below a partition's end may return nothing before the reader ends it.
IDLE_S = 5.0
_POLL_MS = 500


class KafkaBus(Protocol):
    """What the readers use of `infra.bus.KafkaBus` (which imports this module)."""

    connection: Any

    def consumer(self, topics: Iterable[str], group_id: str | None, **options: Any) -> Any:
        """Return an unstarted consumer."""


class EndOffsetUnknownError(RuntimeError):
    """Raise when no fetch answer gave a partition's high watermark in time."""

    def __init__(self, topic: str, partition: int, timeout_s: float) -> None:
        super().__init__(
            f"no fetch answer gave the end of {topic}[{partition}] within {timeout_s:.0f}s"
        )
        self.topic = topic
        self.partition = partition


async def true_end_offsets(
    bus: KafkaBus,
    tps: Iterable[Any],
    reported: Mapping[Any, int],
    *,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> dict[Any, int]:
    """Return the end offset of each partition: max(ListOffsets, a fetch's high watermark).

    `tps` may be aiokafka `TopicPartition`s or Faust `TP`s; the result uses the same keys.
    The probe waits for the fetch's answer however slow the broker is (up to
    `timeout_s`, then `EndOffsetUnknownError`).
    """
    out = {tp: int(reported.get(tp) or 0) for tp in tps}
    probe_tps = [tp for tp, end in out.items() if end > 0]
    if not probe_tps:
        return out
    reader = bus.consumer((), None, from_beginning=False, client_id=bus.connection.client("probe"))
    probe = (await reader.start()).raw
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        for tp in probe_tps:
            ktp = TopicPartition(tp.topic, tp.partition)
            probe.assign([ktp])
            probe.seek(ktp, out[tp] - 1)
            hw = await _fetched_highwater(probe, ktp, deadline, timeout_s)
            if hw > out[tp]:
                log.debug("%s[%d]: end %d, not %d", tp.topic, tp.partition, hw, out[tp])
                out[tp] = hw
    finally:
        await reader.stop()
    return out


async def _fetched_highwater(
    probe: AIOKafkaConsumer, ktp: TopicPartition, deadline: float, timeout_s: float
) -> int:
    loop = asyncio.get_running_loop()
    waited = False
    while True:
        await probe.getmany(ktp, timeout_ms=_POLL_MS, max_records=1)
        hw = probe.highwater(ktp)
        if hw is not None:
            return int(hw)
        if loop.time() >= deadline:
            raise EndOffsetUnknownError(ktp.topic, ktp.partition, timeout_s)
        if not waited:
            log.info("waiting for the broker's fetch answer on %s[%d]", ktp.topic, ktp.partition)
            waited = True


async def read_to_end(
    bus: KafkaBus,
    tps: Sequence[TopicPartition],
    on_records: Callable[[list[ConsumerRecord[Any, Any]]], None],
    *,
    last: int | None = None,
    idle_s: float = IDLE_S,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> dict[TopicPartition, int]:
    """Read partitions from their beginning (or their `last` offsets) to their true ends.

    Hand every fetched list of records to `on_records`; return the ends read to.
    """
    if not tps:
        return {}
    reader = await bus.consumer((), None).start()
    consumer = reader.raw
    try:
        consumer.assign(list(tps))
        starts = await consumer.beginning_offsets(tps)
        ends = await true_end_offsets(
            bus, tps, await consumer.end_offsets(tps), timeout_s=timeout_s
        )
        for tp in tps:
            consumer.seek(tp, starts[tp] if last is None else max(starts[tp], ends[tp] - last))
        loop = asyncio.get_running_loop()
        heard = dict.fromkeys(tps, loop.time())
        pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=_POLL_MS)
            now = loop.time()
            for tp, msgs in batch.items():
                if msgs:
                    on_records(msgs)
                    heard[tp] = now
            for tp in list(pending):
                position = await consumer.position(tp)
                if position >= ends[tp]:
                    pending.discard(tp)
                elif now - heard[tp] >= idle_s:
                    log.warning(
                        "%s[%d]: offsets %d..%d hold no records (a batch the broker never "
                        "wrote); read to %d",
                        tp.topic, tp.partition, position, ends[tp] - 1, position,
                    )  # fmt: skip
                    pending.discard(tp)
        return ends
    finally:
        await reader.stop()


async def read_topics_to_end(
    bus: KafkaBus,
    topics: Iterable[str],
    on_records: Callable[[list[ConsumerRecord[Any, Any]]], None],
    **options: Any,
) -> dict[TopicPartition, int]:
    """Read every partition of whole topics (full names) to their true ends; see `read_to_end`."""
    reader = await bus.consumer((), None).start()
    try:
        await reader.raw.topics()  # metadata of every topic
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(reader.raw.partitions_for_topic(t) or ())
        ]
    finally:
        await reader.stop()
    return await read_to_end(bus, tps, on_records, **options)
