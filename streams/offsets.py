"""True end offsets, also on brokers whose ListOffsets reports a batch's base offset.

Tansu (the embedded and test broker) answers ListOffsets(latest) with the base
offset of the last record batch + 1 instead of the last offset + 1; fetch responses
carry the right high watermark. Faust's table recovery reads changelogs up to
ListOffsets' answer, so on Tansu it would stop inside the last batch, recover stale
state pieces and then skip, for good, the records those pieces had not applied yet.
`true_end_offsets` probes the last batch with a fetch and takes the larger of the
two answers (on Apache Kafka they agree); `install_faust_highwater_fix` makes
Faust's recovery use it. The probe waits for the fetch's answer however slow the
broker is (up to `timeout_s`, then `EndOffsetUnknownError`): a recovery must never
start from a guess.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.bus import KafkaBus

__all__ = ["EndOffsetUnknownError", "install_faust_highwater_fix", "true_end_offsets"]

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 120.0
_POLL_MS = 500


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
        # Faust gives up on the recovery step after its request timeout anyway
        timeout_s = bus.connection.group_request_timeout_ms / 1000
        return await true_end_offsets(bus, partitions, reported, timeout_s=timeout_s)

    _highwaters._tradeloop_fix = True  # type: ignore[attr-defined]
    cls._highwaters = _highwaters
