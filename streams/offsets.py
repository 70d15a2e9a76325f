"""True end offsets, also on brokers whose ListOffsets reports a batch's base offset.

Tansu (the embedded and test broker) answers ListOffsets(latest) with the base
offset of the last record batch + 1 instead of the last offset + 1; fetch responses
carry the right high watermark. Faust's table recovery reads changelogs up to
ListOffsets' answer, so on Tansu it would stop before the newest records of the
last batch and recover stale state. `true_end_offsets` probes the last batch with a
fetch and takes the larger of the two answers (on Apache Kafka they agree);
`install_faust_highwater_fix` makes Faust's recovery use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import TopicPartition

from infra.bus import KafkaBus

__all__ = ["install_faust_highwater_fix", "true_end_offsets"]


async def true_end_offsets(
    bus: KafkaBus, tps: Iterable[Any], reported: Mapping[Any, int]
) -> dict[Any, int]:
    """Return the end offset of each partition: max(ListOffsets, a fetch's high watermark).

    `tps` may be aiokafka `TopicPartition`s or Faust `TP`s; the result uses the same keys.
    """
    out = {tp: int(reported.get(tp) or 0) for tp in tps}
    probe_tps = [tp for tp, end in out.items() if end > 0]
    if not probe_tps:
        return out
    reader = bus.consumer((), None, from_beginning=False, client_id=bus.connection.client("probe"))
    probe = (await reader.start()).raw
    try:
        for tp in probe_tps:
            ktp = TopicPartition(tp.topic, tp.partition)
            probe.assign([ktp])
            probe.seek(ktp, out[tp] - 1)
            await probe.getmany(ktp, timeout_ms=2000, max_records=1)
            hw = probe.highwater(ktp)
            if hw is not None and hw > out[tp]:
                out[tp] = int(hw)
    finally:
        await reader.stop()
    return out


def install_faust_highwater_fix(bus: KafkaBus) -> None:
    """Make Faust's recovery read changelogs to their true end (idempotent)."""
    from faust.transport.drivers import aiokafka as driver

    cls: Any = driver.AIOKafkaConsumerThread
    if getattr(cls._highwaters, "_tradeloop_fix", False):
        return
    original = cls._highwaters

    async def _highwaters(
        self: Any, partitions: list[TopicPartition]
    ) -> Mapping[TopicPartition, int]:
        reported = await original(self, partitions)
        if self.consumer.in_transaction:
            return reported
        return await true_end_offsets(bus, partitions, reported)

    _highwaters._tradeloop_fix = True  # type: ignore[attr-defined]
    cls._highwaters = _highwaters
