"""The Faust app of the streams worker: topics, the state table, pushes and the lake sink.

One process runs:
- three agents (bars, signals, outcomes; `streams.agents`) that take batches of
  records, validate each, fold it into the stream features held in a Faust table
  with a changelog, emit `FeatureUpdate`/`DriftAlert` events and queue online pushes;
- a timer that pushes the queued rows to the Feast online store in batches;
- the lake sink (`streams.sink.LakeSink`, own consumer group) in a child process on
  its own core (`streams.sink_process`), its counters mirrored into this /metrics;
- a Prometheus endpoint.

Exactly-once folding: every piece a batch changed is handed to the changelog
before any event of the batch is acknowledged, and Faust flushes its producer (fully: see
`install_full_flush`) before it commits; every piece records the positions it
applied, so a record re-read after a crash is not folded twice
(`streams.state_table`). After each rebalance the
worker pushes the latest values of every key it owns, which repairs online rows
whose push was lost with a killed process.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra import kafka_compat as _kafka_compat  # noqa: F401  (before Faust makes producers)
from infra.settings import Settings, settings_env

import faust  # isort: skip
from faust.types import TP  # isort: skip
from features.stream import StreamFeatureState
from infra.bus import KafkaBus, topic_settings
from infra.contracts import LAKE_TOPICS, Event, encode, event_key, topic_for
from infra.heap import SERVICE_GEN0_OBJECTS, service_heap
from streams.faust_tuning import tune_faust
from streams.metrics import StreamMetrics
from streams.offsets import install_faust_highwater_fix
from streams.online import OnlinePusher
from streams.processing import SOURCE_TOPICS
from streams.seeks import SEEK_TARGETS, install_faust_seek_fix
from streams.sink_process import SinkOptions, SinkProcess
from streams.state_table import StateTable, install_full_flush

__all__ = ["WorkerApp", "WorkerOptions", "create_app"]

log = logging.getLogger(__name__)

_PUSH_BACKOFF_MIN_S = 0.5
_PUSH_BACKOFF_MAX_S = 10.0
# records delivered to an agent but not folded for two intervals are read again
FOLD_CHECK_INTERVAL_S = 5.0


@dataclass(frozen=True)
class WorkerOptions:
    """Knobs of one worker process."""

    group_id: str = ""
    metrics_port: int = 0
    lake_batch_events: int = 5000
    lake_batch_seconds: float = 5.0
    push_interval_s: float = 0.5
    commit_interval_s: float = 1.0
    batch_max: int = 1000
    batch_within_s: float = 0.05
    #: After start-up: freeze the heap, young collections every this many objects (0: off).
    gc_young_objects: int = SERVICE_GEN0_OBJECTS
    feast: bool = True
    sink: bool = True


class WorkerApp:
    """Everything one worker process owns."""

    def __init__(self, settings: Settings, options: WorkerOptions) -> None:
        self.settings = settings
        self.options = options
        self.group_id = options.group_id or f"{settings.topic_prefix}streams"
        self.metrics = StreamMetrics()
        self._out = {
            t: self.metrics.events_out.labels(topic=t) for t in ("features", "drift", "dlq")
        }
        self.bus = KafkaBus(settings)
        datadir = settings.home / "faust" / f"{self.group_id}-{os.getpid()}"
        tuning = tune_faust()  # uvloop, batched drain: before Faust makes its loops
        self.app = faust.App(
            self.group_id,
            **self.bus.faust_options(),  # broker, client id, timeouts, acks
            store="memory://",
            datadir=str(datadir),
            key_serializer="raw",
            value_serializer="raw",
            topic_partitions=settings.topic_partitions,
            topic_replication_factor=1,
            broker_commit_interval=options.commit_interval_s,
            consumer_auto_offset_reset="earliest",
            producer_linger=0.005,
            # changelog pieces are a few KiB each: small batches make every agent
            # wait on the producer buffer
            producer_max_batch_size=512 * 1024,
            producer_max_request_size=4 * 1024 * 1024,
            stream_wait_empty=False,
            web_enabled=False,
            table_cleanup_interval=3600.0,
            topic_disable_leader=True,
            **tuning,
        )
        self.topics: dict[str, Any] = {
            name: self.app.topic(settings.topic(name), key_type=bytes, value_type=bytes)
            for name in LAKE_TOPICS
        }
        self.table = self.app.Table(
            "stream_state",
            partitions=settings.topic_partitions,
            key_type=str,
            value_type=bytes,
        )
        install_full_flush()
        install_faust_highwater_fix(self.bus)
        install_faust_seek_fix()
        self.pieces = StateTable(
            self.table,
            dead_letter_topic=settings.topic("dlq"),
            consumer=self.group_id,
            on_reject=self.metrics.dead_letters.labels(topic="stream_state").inc,
        )
        self.state = StreamFeatureState(store=self.pieces)
        self.pusher: OnlinePusher | None = None
        self._pushing = False
        self._push_retry_at = 0.0
        self._push_backoff_s = _PUSH_BACKOFF_MIN_S
        self._push_failing_since: float | None = None
        self._frozen = 0  # objects `run` froze (infra/heap.py)
        if options.feast:
            store = _LazyFeatureStore(settings)
            # load Feast now: importing it later on the push thread starves the event
            # loop (heartbeats, commits) for seconds
            store.load()
            self.pusher = OnlinePusher(store, self.metrics)
        self.sink: SinkProcess | None = None
        if options.sink:
            self.sink = SinkProcess(
                settings_env(settings),
                SinkOptions(
                    group_id=f"{self.group_id}-lake",
                    batch_events=options.lake_batch_events,
                    batch_seconds=options.lake_batch_seconds,
                ),
                self.metrics,
            )
        self._wire()

    # Sending --------------------------------------------------------------

    async def emit(self, event: Event) -> None:
        """Produce an output event on its topic (flushed before Faust commits)."""
        short = topic_for(event)
        await self.send(short, event_key(event), encode(event))

    async def persist_changed(self) -> int:
        """Hand every state piece changed since the last call to the changelog."""
        return await self.pieces.persist_dirty(self._send_changelog)

    async def _send_changelog(
        self, topic: str, key: bytes, value: bytes, partition: int | None
    ) -> None:
        fut = await self.app.producer.send(
            topic, key, value, partition=partition, timestamp=None, headers=None
        )
        fut.add_done_callback(self._delivered)  # type: ignore[attr-defined]

    async def send(self, short: str, key: bytes, value: bytes) -> None:
        """Hand a record to Faust's producer (Faust flushes it before every commit).

        This skips Faust's per-message Topic machinery, which costs more than the
        rest of the event's processing; a failed delivery stops the worker
        (fail-stop), so no later commit can cover a lost output.
        """
        fut = await self.app.producer.send(
            self.settings.topic(short), key, value, partition=None, timestamp=None, headers=None
        )
        fut.add_done_callback(self._delivered)  # type: ignore[attr-defined]
        self._out[short].inc()

    def _delivered(self, fut: Any) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if exc is not None or fut.cancelled():
            log.critical("an output record was not delivered (%r); stopping the worker", exc)
            os._exit(70)

    # Wiring ---------------------------------------------------------------

    def source_partitions(self) -> set[int]:
        """Return the partitions of the source topics this worker owns now."""
        names = {self.settings.topic(t) for t in SOURCE_TOPICS}
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic in names}

    def resync(self) -> int:
        """Queue the latest values of every owned key for an online push."""
        if self.pusher is None:
            return 0
        owned = self.source_partitions()
        n = 0
        for key, piece in list(self.pieces.items()):
            parts = {int(p.rsplit(":", 1)[1]) for p in piece.positions}
            if parts & owned:
                self.pusher.add(self.state.latest(key))
                n += 1
                log.debug("resync %s at %s", key, piece.positions)
        log.info("resync: queued the latest values of %d keys (partitions %s)", n, sorted(owned))
        return n

    async def push_pending(self) -> None:
        """Push queued online rows in a thread; requeue them if the push fails.

        One push at a time: while one runs (or while a failed one backs off, 0.5 s
        doubling to `_PUSH_BACKOFF_MAX_S`) the timer does nothing, so a silent online
        store never piles up threads; rows keep being queued (latest per entity).
        """
        pusher = self.pusher
        loop = asyncio.get_running_loop()
        if pusher is None or not pusher.pending or self._pushing:
            return
        if loop.time() < self._push_retry_at:
            return
        batch = pusher.take()
        self._pushing = True
        try:
            await pusher.push_from_loop(batch)
        except Exception as exc:
            pusher.requeue(batch)
            self.metrics.feast_push_failures.inc()
            if self._push_failing_since is None:
                self._push_failing_since = loop.time()
            log.warning(
                "Feast push of %d rows failed (%s: %s); retrying in %.1fs, rows kept",
                len(batch),
                type(exc).__name__,
                str(exc)[:200],
                self._push_backoff_s,
            )
            self._push_retry_at = loop.time() + self._push_backoff_s
            self._push_backoff_s = min(self._push_backoff_s * 2, _PUSH_BACKOFF_MAX_S)
            return
        finally:
            self._pushing = False
        if self._push_failing_since is not None:
            log.info(
                "Feast push recovered after %.1fs (%d rows)",
                loop.time() - self._push_failing_since,
                len(batch),
            )
            self._push_failing_since = None
        self._push_backoff_s = _PUSH_BACKOFF_MIN_S

    async def reread(self, short: str, topic: str, partition: int, offset: int) -> None:
        """Seek a source partition back to a record lost before it was folded."""
        if not SEEK_TARGETS.needs_seek(topic, partition, offset):
            return  # a pending seek reads it again
        tp = TP(topic, partition)
        if tp not in self.app.consumer.assignment():
            return  # revoked: its next owner reads from the commit, which stops before it
        log.warning("%s[%d]: records from %d were not folded; reading them again", *tp, offset)
        self.metrics.rereads.labels(topic=short).inc()
        SEEK_TARGETS.set(topic, partition, offset)
        try:
            await self.app.consumer.seek_wait({tp: offset})
        except Exception as exc:  # a rebalance took it meanwhile: its seek reads it again
            log.warning("%s[%d]: seek to %d failed (%r)", *tp, offset, exc)

    async def reread_stalled(self) -> None:
        """Read again the records delivered but not folded since the last call."""
        names = {self.settings.topic(t): t for t in SOURCE_TOPICS}
        for topic, partition, offset in SEEK_TARGETS.stalled():
            if topic in names:
                await self.reread(names[topic], topic, partition, offset)

    def _wire(self) -> None:
        from streams.agents import register_agents

        register_agents(self)
        app = self.app

        @app.task
        async def _started() -> None:
            if self._frozen:
                log.info("heap settled: %d objects frozen (infra/heap.py)", self._frozen)
            if self.pusher is not None:
                self.pusher.warm()

        @app.timer(interval=FOLD_CHECK_INTERVAL_S)
        async def _reread_stalled() -> None:
            await self.reread_stalled()

        @app.timer(interval=self.options.push_interval_s)
        async def _push_online() -> None:
            await self.push_pending()

        @app.on_partitions_revoked.connect  # type: ignore[arg-type]
        async def _on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
            self.pieces.forget()

        @app.on_rebalance_complete.connect  # type: ignore[arg-type]
        async def _on_rebalance_complete(sender: Any, *args: Any, **kwargs: Any) -> None:
            self.pieces.forget()  # the table was recovered from its changelog
            self.resync()

        if self.sink is not None:
            sink = self.sink

            @app.task
            async def _lake_sink() -> None:
                await sink.run()

            @app.on_before_shutdown.connect  # type: ignore[arg-type]
            async def _stop_sink(sender: Any, *args: Any, **kwargs: Any) -> None:
                await sink.stop()

        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def _last_push(sender: Any, *args: Any, **kwargs: Any) -> None:
            await self.push_pending()
            if self.pusher is not None:
                self.pusher.close()  # the push thread and the timings file

        if self.options.metrics_port:
            self.metrics.serve(self.options.metrics_port)

    def run(self, loglevel: str = "INFO") -> None:
        """Run the worker until SIGTERM/SIGINT."""
        for noisy in ("feast", "feast.infra.registry.registry"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        Path(self.app.conf.datadir).mkdir(parents=True, exist_ok=True)
        if self.options.gc_young_objects > 0:  # start-up is over: Faust, Feast are loaded
            self._frozen = service_heap(self.options.gc_young_objects)
        worker = faust.Worker(self.app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
        worker.execute_from_commandline()


class _LazyFeatureStore:
    """The Feast store, built (and applied, if the definitions changed) on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Any = None

    def load(self) -> Any:
        if self._store is None:
            from features.store import TradeloopFeatureStore

            store = TradeloopFeatureStore(self.settings)
            store.apply(force=False)
            _ = store.store  # builds the SDK object (registry, online store config)
            self._store = store
        return self._store

    def push_updates(self, updates: Any) -> int:
        return int(self.load().push_updates(updates))

    def warm_online(self) -> None:
        self.load().warm_online()


def create_app(settings: Settings, options: WorkerOptions | None = None) -> WorkerApp:
    """Build the worker (creating the topics first)."""
    topics_bus = KafkaBus(settings)
    asyncio.run(topics_bus.ensure_topics(topic_settings(topics_bus)))
    return WorkerApp(settings, options or WorkerOptions())
