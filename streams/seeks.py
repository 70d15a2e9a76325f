"""Source partitions read in order across Faust's seeks: no record skipped after a restart.

A state piece remembers the highest offset it applied per source partition, so a
record is folded exactly once only if each partition is delivered in order. Two
things in Faust and aiokafka broke that order around a recovery:

- After a recovery Faust seeks the source partitions to their committed offsets.
  aiokafka's `seek_to_committed` does not seek a partition that has no committed
  offset (a group whose first worker died before its first commit), so records
  fetched and dropped while the flow was stopped were not fetched again.
- Records a fetch returned before a seek are still delivered after it. They set
  Faust's read offset ahead, and Faust's delivery then drops the records the seek
  fetches again as "already read": in one run a partition went from offset 0 to 170
  and 0..169 were never folded (a later worker skipped them as done).

`install_faust_seek_fix` makes the seek after a recovery seek every source partition
(to its committed offset, or to its beginning as `auto_offset_reset=earliest` says)
and records where it went in `SEEK_TARGETS`; the worker's delivery
(`streams.faust_tuning`) drops a partition's records until the record at that
offset arrives, so what a stale fetch returned never runs ahead of the seek.

Records can also be lost after delivery, on their way to the agent. In two measured
hand-overs about 40 records per partition, delivered right after the recovery's seek,
never reached the agent, and Faust committed past them. Its code has two ways to do
that: `FlowControlEvent.resume` clears the stream buffers after that seek, and a
stream acknowledges the records it skips while flow is suspended. So `SEEK_TARGETS` also keeps the next offset each
source partition must fold: the agent folds nothing past a hole and seeks back to it
(`missing`), a timer re-reads records delivered but not folded (`stalled`), and no
commit goes past the first record not folded (`cap`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import TopicPartition

__all__ = [
    "SEEK_TARGETS",
    "STALE_WAIT_S",
    "SeekTargets",
    "install_faust_seek_fix",
    "seek_sources",
]

log = logging.getLogger(__name__)

# a partition whose target offset never arrives (retention deleted it) is read on
# from the first record after it once this long has passed
STALE_WAIT_S = 30.0


Key = tuple[str, int]


class SeekTargets:
    """Where each source partition was last sought, until its record there arrives;
    and the next offset each must fold."""

    def __init__(self, wait_s: float = STALE_WAIT_S) -> None:
        self.wait_s = wait_s
        self._targets: dict[Key, tuple[int, float]] = {}
        self._next: dict[Key, int] = {}
        # the last offset handed to the agents, keyed by Faust's TP (a (topic, partition) tuple)
        self.delivered: dict[Key, int] = {}
        self._suspect: dict[Key, int] = {}
        self.stale_dropped = 0
        self.gaps_accepted = 0

    def __bool__(self) -> bool:
        return bool(self._targets)

    def set(self, topic: str, partition: int, offset: int) -> None:
        """Record that a partition was sought to `offset`: its next fold is that record."""
        key = (topic, partition)
        self._targets[key] = (offset, time.monotonic())
        self._next[key] = offset
        self._suspect.pop(key, None)

    def pending(self, topic: str, partition: int) -> int | None:
        """Return the offset a partition waits for, or None."""
        target = self._targets.get((topic, partition))
        return None if target is None else target[0]

    def admit(self, topic: str, partition: int, offset: int) -> bool:
        """Say whether a record may be delivered (False: fetched before the last seek)."""
        key = (topic, partition)
        target = self._targets.get(key)
        if target is None:
            return True
        want, since = target
        if offset == want:
            del self._targets[key]
            return True
        if offset > want and time.monotonic() - since > self.wait_s:
            del self._targets[key]
            self._next[key] = offset
            self.gaps_accepted += 1
            log.warning(
                "%s[%d]: offset %d never arrived after the seek; reading on from %d",
                topic,
                partition,
                want,
                offset,
            )
            return True
        self.stale_dropped += 1
        return False

    def missing(self, topic: str, partition: int, offset: int) -> int | None:
        """Return the first offset not folded yet if `offset` lies past it (the records
        in between were lost on their way); else count `offset` as folded, return None.

        A record below it was folded already; the state skips it by its position.
        """
        key = (topic, partition)
        want = self._next.get(key)
        if want is not None and offset > want:
            return want
        if want is None or offset == want:
            self._next[key] = offset + 1
        return None

    def needs_seek(self, topic: str, partition: int, offset: int) -> bool:
        """Say whether re-reading from `offset` needs a seek (none pending reaches it)."""
        pending = self.pending(topic, partition)
        return pending is None or pending > offset

    def stalled(self) -> list[tuple[str, int, int]]:
        """Return (topic, partition, next offset) of partitions whose records were
        delivered but not folded, with no fold since the last call."""
        out = []
        for key, last in self.delivered.items():
            want = self._next.get(key)
            if want is None or last < want or key in self._targets:
                self._suspect.pop(key, None)
            elif self._suspect.get(key) == want:
                out.append((key[0], key[1], want))
            else:
                self._suspect[key] = want
        return out

    def cap(self, topic: str, partition: int, offset: int) -> int:
        """Return a commit offset that does not pass the first record not folded."""
        want = self._next.get((topic, partition))
        return offset if want is None else min(offset, want)

    def clear(self) -> None:
        """Forget every target and position."""
        self._targets.clear()
        self._next.clear()
        self.delivered.clear()
        self._suspect.clear()


SEEK_TARGETS = SeekTargets()


async def seek_sources(consumer: Any, changelogs: set[str], targets: SeekTargets) -> dict[Any, Any]:
    """Seek an aiokafka consumer's partitions to their committed offsets, like
    `seek_to_committed`, and every source partition without one to its beginning.

    The targets are recorded before the seeks: a record delivered in between is
    either stale (dropped) or the target itself.
    """
    assigned = list(consumer.assignment())
    committed = {tp: await consumer.committed(tp) for tp in assigned}
    sources = [tp for tp in assigned if tp.topic not in changelogs]
    fresh = [tp for tp in sources if not committed[tp] or committed[tp] <= 0]
    starts = await consumer.beginning_offsets(fresh) if fresh else {}
    for tp in sources:
        targets.set(tp.topic, tp.partition, int(starts[tp] if tp in fresh else committed[tp]))
    if fresh:
        log.info("no committed offset: reading %s from the beginning", sorted(map(str, fresh)))
    for tp in assigned:
        if tp in starts:
            consumer.seek(tp, starts[tp])
        elif committed[tp] and committed[tp] > 0:
            consumer.seek(tp, committed[tp])
    return committed


def install_faust_seek_fix(targets: SeekTargets = SEEK_TARGETS) -> None:
    """Make Faust's seek after a recovery seek every source partition and record it,
    and cap its commits at the first record not folded."""
    from faust.transport.drivers import aiokafka as driver

    cls: Any = driver.AIOKafkaConsumerThread
    if getattr(cls.seek_to_committed, "_tradeloop_fix", False):
        return

    async def seek_to_committed(self: Any) -> Mapping[TopicPartition, int]:
        changelogs = set(self.consumer.app.tables.changelog_topics)
        return await self.call_thread(seek_sources, self._ensure_consumer(), changelogs, targets)

    seek_to_committed._tradeloop_fix = True  # type: ignore[attr-defined]
    cls.seek_to_committed = seek_to_committed
    commit = cls._commit

    async def _commit(self: Any, offsets: Mapping[Any, int]) -> bool:
        capped = {tp: targets.cap(tp.topic, tp.partition, o) for tp, o in offsets.items()}
        return bool(await commit(self, capped))

    cls._commit = _commit
