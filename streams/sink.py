"""The lake sink: raw events to offset-named parquet, committed only once durable.

A dedicated consumer of the bus (its own group, manual commits) runs next to the
worker's Faust agents. Per partition it buffers valid records and flushes by
count or age:

1. write a marker `_sink/{topic}/part-{partition}.json` = {first, last}: the exact
   offset range of the batch;
2. upload the batch's files (one per date and symbol), each named by the smallest
   and largest offsets it holds;
3. commit `last + 1`.

A crash after (1) or (2) leaves the offsets uncommitted, so the next owner of the
partition re-reads from `first`; it reads the marker and cuts its next batch at
exactly `last`, so it writes the same keys with the same rows (an overwrite, not a
duplicate). With the commit after the upload, every event lands exactly once.
Failed uploads are retried with exponential backoff while fetching is paused;
nothing is committed until they succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import ConsumerRebalanceListener, TopicPartition

from infra.bus import BusConsumer, KafkaBus
from infra.crash import CrashPoint, crash_point
from infra.lake import LAKE_TOPICS, write_batch
from infra.objectstore import (
    ObjectNotFoundError,
    ObjectStore,
    S3ObjectStore,
    s3_client,
    store_for_uri,
)
from infra.settings import Settings
from streams.metrics import StreamMetrics
from streams.validate import Rejected, validate_record

__all__ = ["LakeSink", "marker_key", "sink_store"]

log = logging.getLogger(__name__)


def marker_key(topic: str, partition: int) -> str:
    """Return the key of a partition's in-flight batch marker."""
    return f"_sink/{topic}/part-{partition}.json"


def sink_store(settings: Settings) -> ObjectStore:
    """Return the lake store (S3 timeouts from the settings; an outage is retried by the sink)."""
    lake = settings.lake
    if lake.startswith("s3://"):
        bucket, _, prefix = lake[len("s3://") :].partition("/")
        client = s3_client(settings)
        return S3ObjectStore(client, bucket, prefix)
    return store_for_uri(lake, settings)


@dataclass
class _Buffer:
    start: int | None = None
    end: int = -1
    rows: list[dict[str, Any]] = field(default_factory=list)
    since: float = 0.0
    marker_checked: bool = False
    forced_end: int | None = None

    @property
    def has_data(self) -> bool:
        return self.start is not None and self.end >= self.start


@dataclass(frozen=True)
class _Plan:
    tp: TopicPartition
    short: str
    first: int
    last: int
    rows: list[dict[str, Any]]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: LakeSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.sink._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.sink._on_assigned(set(assigned))


class LakeSink:
    """Consume topics and land every valid event in the lake exactly once."""

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str,
        topics: Iterable[str] = LAKE_TOPICS,
        batch_events: int = 5000,
        batch_seconds: float = 5.0,
        metrics: StreamMetrics | None = None,
        store: ObjectStore | None = None,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.short = {settings.topic(t): t for t in topics}
        self.batch_events = batch_events
        self.batch_seconds = batch_seconds
        self.metrics = metrics or StreamMetrics()
        self.store = store or sink_store(settings)
        self.max_backoff_s = max_backoff_s
        self.buffers: dict[TopicPartition, _Buffer] = {}
        self.events_written = 0
        self.flushes = 0
        self.resumed_batches = 0
        self._lock = asyncio.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="lake")
        self._consumer: BusConsumer | None = None
        self._stopping = False

    # Consumer -------------------------------------------------------------

    def _make_consumer(self) -> BusConsumer:
        return KafkaBus(self.settings).consumer(
            sorted(self.short),
            self.group_id,
            from_beginning=True,
            listener=_Listener(self),
            client_id=f"{self.group_id}-sink",
            # a flush uploads in threads and may take long: the member must stay in the group
            max_poll_interval_ms=3_600_000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self.buffers[tp] = _Buffer()
        log.info("lake sink assigned %s", sorted(f"{t.topic}:{t.partition}" for t in assigned))

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Wait for an in-flight flush, try once to land what is buffered, then forget it.
        try:
            await self._flush_once({tp for tp in revoked if tp in self.buffers}, final=True)
        except Exception as exc:  # uncommitted data is re-read by the next owner
            log.warning("lake flush on revoke failed (%s); the next owner re-reads it", exc)
        for tp in revoked:
            self.buffers.pop(tp, None)

    # Main loop ------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume and flush until `stop` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        bus_consumer = self._make_consumer()
        self._consumer = bus_consumer
        await bus_consumer.start()
        consumer = bus_consumer.raw
        backoff = 0.2
        failing_since: float | None = None
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
                for tp, msgs in batch.items():
                    self._add(tp, msgs)
                if not self._due():
                    continue
                try:
                    await self._flush_once(set(self.buffers))
                except Exception as exc:
                    self.metrics.lake_retries.inc()
                    if failing_since is None:
                        failing_since = time.monotonic()
                        consumer.pause(*consumer.assignment())
                    log.warning(
                        "lake flush failed (%s: %s); retrying in %.1fs, offsets stay uncommitted",
                        type(exc).__name__,
                        str(exc)[:200],
                        backoff,
                    )
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
                    continue
                if failing_since is not None:
                    log.info("lake flush recovered after %.1fs", time.monotonic() - failing_since)
                    consumer.resume(*consumer.assignment())
                    failing_since = None
                backoff = 0.2
            with contextlib.suppress(Exception):
                await self._flush_once(set(self.buffers), final=True)
        finally:
            self._stopping = True
            with contextlib.suppress(Exception):
                await bus_consumer.stop()
            self._pool.shutdown(wait=False)

    def _add(self, tp: TopicPartition, msgs: list[Any]) -> None:
        buf = self.buffers.get(tp)
        if buf is None:  # a record of a partition revoked meanwhile
            return
        short = self.short[tp.topic]
        for m in msgs:
            if m.offset <= buf.end:
                continue
            if not buf.has_data:
                buf.since = time.monotonic()
            if buf.start is None:
                buf.start = m.offset
            buf.end = m.offset
            self.metrics.events_in.labels(topic=f"lake:{short}").inc()
            checked = validate_record(short, tp.topic, tp.partition, m.offset, m.key, m.value)
            if isinstance(checked, Rejected):
                if short not in ("bars", "signals", "outcomes"):  # those the agents dead-letter
                    log.error(
                        "lake sink skipped an invalid %s record at %s:%s: %s",
                        short,
                        tp.partition,
                        m.offset,
                        checked.dead_letter.reason,
                    )
                continue
            row = orjson.loads(m.value)
            row["kafka_partition"] = tp.partition
            row["kafka_offset"] = m.offset
            row["payload"] = m.value
            buf.rows.append(row)

    def _due(self) -> bool:
        now = time.monotonic()
        total = 0
        for buf in self.buffers.values():
            if not buf.has_data:
                continue
            total += len(buf.rows)
            if now - buf.since >= self.batch_seconds:
                return True
            if buf.forced_end is not None and buf.end >= buf.forced_end:
                return True
        return total >= self.batch_events

    # Flushing -------------------------------------------------------------

    def _read_marker(self, short: str, partition: int) -> dict[str, int] | None:
        try:
            data = json.loads(self.store.get(marker_key(short, partition)))
        except ObjectNotFoundError:
            return None
        return {"first": int(data["first"]), "last": int(data["last"])}

    async def _flush_once(self, tps: set[TopicPartition], final: bool = False) -> int:
        """Land one batch per ready partition and commit it; return events written."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            plans: list[_Plan] = []
            for tp in sorted(tps, key=lambda t: (t.topic, t.partition)):
                buf = self.buffers.get(tp)
                if buf is None or not buf.has_data:
                    continue
                assert buf.start is not None
                short = self.short[tp.topic]
                if not buf.marker_checked:
                    marker = await loop.run_in_executor(
                        self._pool, self._read_marker, short, tp.partition
                    )
                    if marker is not None and marker["last"] >= buf.start:
                        buf.forced_end = marker["last"]
                        self.resumed_batches += 1
                        log.info("lake %s:%d resumes the batch %s", short, tp.partition, marker)
                    buf.marker_checked = True
                last = buf.forced_end if buf.forced_end is not None else buf.end
                if buf.end < last:
                    continue  # still re-reading up to the marker's boundary
                rows = [r for r in buf.rows if r["kafka_offset"] <= last]
                plans.append(_Plan(tp, short, buf.start, last, rows))
                # the boundary is fixed from now on: a retry (or the next owner, through
                # the marker) lands exactly this range under exactly these keys
                buf.forced_end = last
            if not plans:
                return 0
            keys = await loop.run_in_executor(self._pool, self._land, plans)
            crash_point(CrashPoint.SINK_AFTER_UPLOAD_BEFORE_COMMIT)
            consumer = self._consumer
            assert consumer is not None
            await consumer.commit({(p.tp.topic, p.tp.partition): p.last + 1 for p in plans})
            written = 0
            for p, files in zip(plans, keys, strict=True):
                buf = self.buffers.get(p.tp)
                if buf is not None:
                    buf.rows = [r for r in buf.rows if r["kafka_offset"] > p.last]
                    buf.start = p.last + 1
                    buf.forced_end = None
                    buf.since = time.monotonic()
                written += len(p.rows)
                self.metrics.lake_files.labels(topic=p.short).inc(len(files))
                self.metrics.lake_events.labels(topic=p.short).inc(len(p.rows))
            self.events_written += written
            self.flushes += 1
            return written

    def _land(self, plans: list[_Plan]) -> list[list[str]]:
        """Write markers, then files (in parallel); raise if any write fails."""
        for p in plans:  # always (re)written: a retry must leave the marker in place
            body = json.dumps({"first": p.first, "last": p.last, "topic": p.short}).encode()
            self.store.put(marker_key(p.short, p.tp.partition), body)
        crash_point(CrashPoint.SINK_AFTER_MARKER_BEFORE_UPLOAD)
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [
                pool.submit(write_batch, self.store, p.short, p.tp.partition, p.rows) for p in plans
            ]
            return [f.result() for f in futures]
