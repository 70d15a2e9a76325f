"""Faust's changelog recovery read to the true end offsets (`infra.offsets`).

Faust's table recovery reads changelogs up to ListOffsets' answer, which on Tansu
stops short of the end (see `infra.offsets`): it would recover stale state pieces
and then skip, for good, the records those pieces had not applied yet.
`install_faust_highwater_fix` makes Faust's recovery use `true_end_offsets`, whose
probe waits for the fetch's answer however slow the broker is (up to its timeout,
then `EndOffsetUnknownError`): a recovery must never start from a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import TopicPartition

from infra.bus import KafkaBus
from infra.offsets import EndOffsetUnknownError, true_end_offsets

__all__ = ["EndOffsetUnknownError", "install_faust_highwater_fix", "true_end_offsets"]


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
