"""Streams worker events/s vs a bare aiokafka loop, the Faust ceiling and Quix Streams.

Starts its own Tansu broker, uses Redis at 127.0.0.1:6379 for the Feast online
store and a local directory for the lake. The events are produced before a worker
starts, so no producer shares the CPU while a clock runs; each clock runs from the
first record a worker folded (read from its Prometheus counters).

- End to end: one worker with its lake sink child process (validation, stream
  features, FeatureUpdate emission, Feast pushes, parquet lake), until every event
  is both folded and committed to the lake.
- Features path: one worker without the lake sink (validate, fold, emit, Feast
  push) on the same records, in a consumer group of its own: the worker's per-record
  step alone, compared with the Faust ceiling and Quix Streams.
- The Faust ceiling (`bench.faust_ceiling`): a Faust app with the worker's Faust
  tuning and three agents that only count, on the same records.
- Quix Streams (`bench.stream_peers`, its own process): the same per-record step
  (`streams.processing.process_record`), state in Quix's RocksDB store with
  changelog topics, outputs produced to a topic; no Feast push, no lake. Its final
  feature values are read back and checked against a from-scratch fold.
- Scaling: 1, 2 and 4 worker processes (features path) of one group on topics with
  8 partitions; the workers settle first, then the records are produced.

Run: `.venv/bin/python -m bench.bench_stream [--quick]`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from bench import faust_ceiling
from bench.stream_runs import SOURCE, push_p99_ms, scaling_run, worker_run
from infra.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
SCALING_WORKERS = (1, 2, 4)
SCALING_PARTITIONS = 8


def _sum(m: dict[str, float], prefix: str, topics: tuple[str, ...]) -> float:
    return sum(m.get(f'{prefix}{{topic="{t}"}}', 0.0) for t in topics)


async def _bare_consume(settings: Settings, n: int) -> float:
    consumer = AIOKafkaConsumer(
        *(settings.topic(t) for t in SOURCE),
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"bare-{os.getpid()}-{time.time_ns()}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        seen = 0
        start: float | None = None
        first = 0  # records of the first batch: consumed before the clock starts
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=1000)
            got = sum(len(msgs) for msgs in batch.values())
            if got and start is None:
                start, first = time.perf_counter(), got
            seen += got
        assert start is not None
        return (n - first) / (time.perf_counter() - start)
    finally:
        await consumer.stop()


def _run_quix(settings: Settings, n: int, tmp: Path, timeout_s: float) -> dict[str, Any]:
    """Run the Quix Streams peer in its own process; return its report (with `error` on failure)."""
    out = tmp / "quix.json"
    argv = [
        sys.executable, "-m", "bench.stream_peers", "quix",
        "--bootstrap", settings.bootstrap_servers, "--prefix", settings.topic_prefix,
        "--count", str(n), "--partitions", str(settings.topic_partitions),
        "--session-timeout-ms", str(settings.kafka_session_timeout_ms),
        "--state-dir", str(tmp / "quix-state"), "--timeout", str(timeout_s), "--out", str(out),
    ]  # fmt: skip
    with open(tmp / "quix.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)  # fmt: skip
        try:
            proc.wait(timeout_s + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    tail = (tmp / "quix.log").read_text(errors="replace")[-1500:]
    if not out.exists():
        return {"error": f"exit code {proc.returncode}, no report; log tail: {tail}"}
    report: dict[str, Any] = json.loads(out.read_text())
    if "error" in report:
        report["error"] += f"; log tail: {tail}"
    return report


async def _read_outputs(settings: Settings, topic: str, n: int) -> dict[tuple[str, str, str], Any]:
    """Return the last FeatureUpdate values per (view, symbol, strategy) of an output topic."""
    from infra.contracts import FeatureUpdate, decode

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"check-{os.getpid()}-{time.time_ns()}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    last: dict[tuple[str, str, str], Any] = {}
    try:
        seen, idle = 0, 0
        while seen < n and idle < 10:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            idle = 0 if batch else idle + 1
            for msgs in batch.values():
                for msg in msgs:
                    seen += 1
                    ev: Any = decode(msg.value)
                    if isinstance(ev, FeatureUpdate):
                        last[(ev.feature_view, ev.symbol, ev.strategy)] = ev.values
    finally:
        await consumer.stop()
    return last


def _quix_matches(settings: Settings, report: dict[str, Any], events: list[Any]) -> str:
    """Compare the peer's final feature values with a from-scratch fold; say how they compare."""
    from tests.kit.harness import recompute

    expected = {
        (u.feature_view, u.symbol, u.strategy): u.values for u in recompute(events).entity_rows()
    }
    got = asyncio.run(_read_outputs(settings, report["output_topic"], int(report["outputs"])))
    wrong = sorted(k for k in expected if got.get(k) != expected[k])
    if not wrong:
        return f"its final values of all {len(expected)} keys equal a from-scratch fold"
    return f"its final values differ from a from-scratch fold on {len(wrong)} of {len(expected)} keys: {wrong[:3]}"


def _step_cost(settings: Settings, events: list[Any]) -> tuple[float, float]:
    """Return the wall and thread-CPU seconds per record of the worker's per-record step.

    The step alone, in this process, on the same records: validate, fold (in-memory
    state, no changelog) and encode the outputs, as the agents do before handing
    them to Faust's producer. What a Faust worker adds to the ceiling's per-record
    cost is at least this. The heap is tuned as the worker tunes its own
    (`infra.heap.service_heap`), or this process's large heap would bill the step
    for full collections the worker no longer makes.
    """
    import gc

    from features.stream import StreamFeatureState
    from infra.contracts import encode
    from infra.heap import service_heap
    from streams.processing import process_record
    from tests.kit.harness import as_record

    records = [as_record(e) for e in events]
    state = StreamFeatureState()
    offsets: dict[str, int] = {}
    thresholds = gc.get_threshold()
    service_heap()
    try:
        wall, cpu = time.perf_counter(), time.thread_time()
        for short, key, value in records:
            offset = offsets[short] = offsets.get(short, -1) + 1
            done = process_record(state, short, settings.topic(short), 0, offset, key, value,
                                  consumer="bench")  # fmt: skip
            for out in done.outputs:
                encode(out)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    n = max(len(records), 1)
    return wall / n, cpu / n


def _push_metric(
    push_s: list[float], bucket_p99_ms: float | None, what: str, **extra: Any
) -> dict[str, Any]:
    """Return the distribution of a worker's online pushes (each one timed by the worker)."""
    from bench.harness import summarize

    bound = "" if bucket_p99_ms is None else f"; its histogram puts p99 <= {bucket_p99_ms:g} ms"
    if not push_s:
        return {"median": float("nan"), "unit": "ms", "label": f"{what}: no push timed"}
    return summarize(push_s, "ms", scale=1e3, label=f"{what} ({len(push_s)} pushes{bound})",
                     **extra)  # fmt: skip


def _settings(broker: Any, tmp: Path, tag: str, partitions: int) -> Settings:
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=broker.address,
        TOPIC_PREFIX=f"bench{tag}{time.time_ns() % 10**8}.",
        TOPIC_PARTITIONS=partitions,
        LAKE_URI=str(tmp / "lake"),
        FEAST_REPO_DIR=str(tmp / "repo"),
        REDIS_URL="redis://127.0.0.1:6379/0",
        KAFKA_SESSION_TIMEOUT_MS=10_000,
    )


def run(quick: bool = False) -> dict[str, Any]:
    """Measure the worker (end to end, features path, scaling) and its peers; return the numbers."""
    from bench.harness import summarize, throughput
    from infra.stack import start_tansu
    from tests.kit.synth import synthetic_events

    n = 10_000 if quick else 200_000
    n_scale = 5_000 if quick else 100_000
    counts = SCALING_WORKERS[:2] if quick else SCALING_WORKERS
    tmp = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    os.environ.setdefault("TRADELOOP_HOME", str(tmp / "home"))
    broker = start_tansu(log_dir=tmp)
    try:
        settings = _settings(broker, tmp, "", 4)
        events = list(synthetic_events(n))
        t0 = time.perf_counter()
        e2e = worker_run(settings, tmp, events, n,
                         ["--lake-batch-events", "20000", "--lake-batch-seconds", "2"], "e2e")  # fmt: skip
        produce_s = time.perf_counter() - t0 - (e2e.done_agents - e2e.first)
        m = e2e.final
        assert e2e.done_lake is not None
        end = max(e2e.done_agents, e2e.done_lake)
        emitted = int(_sum(m, "tradeloop_stream_events_out_total", ("features",)))
        files = int(
            sum(v for k, v in m.items() if k.startswith("tradeloop_lake_files_written_total"))
        )
        features = worker_run(settings, tmp, [], n, ["--no-sink"], "features")
        fm = features.final
        bucket_p99 = push_p99_ms(fm)
        features_rate = n / (features.done_agents - features.first)

        bare = asyncio.run(_bare_consume(settings, n))
        faust_floor, faust_cpu = faust_ceiling.measure_run(
            settings.bootstrap_servers, settings.topic_prefix, n, timeout_s=300 if quick else 1800
        )
        step_wall, step_cpu = _step_cost(settings, events[:50_000])
        quix = _run_quix(settings, n, tmp, timeout_s=300 if quick else 1800)

        scale_events = list(synthetic_events(n_scale, seed=11))
        scaling: dict[int, dict[str, float]] = {}
        for k in counts:
            scale_settings = _settings(broker, tmp, f"scale{k}x", SCALING_PARTITIONS)
            scaling[k] = scaling_run(scale_settings, tmp, scale_events, n_scale, k, ["--no-sink"])

        metrics: dict[str, Any] = {
            "end_to_end": throughput(n, end - e2e.first, "events/s", baseline="aiokafka_loop",
                                     label="one worker, end to end (features + Feast online + lake)"),
            "lake_path": throughput(n, e2e.done_lake - e2e.first, "events/s", baseline="aiokafka_loop",
                                    label="lake sink (same run): validate, parquet, upload, commit"),
            "features_path": throughput(n, features.done_agents - features.first, "events/s",
                                        baseline="faust_ceiling",
                                        label="worker without lake sink: validate, fold, emit, Feast push"),
            "features_bound_cpu": throughput(n, faust_cpu + n * step_cpu, "events/CPU-s",
                                             baseline="faust_ceiling_cpu",
                                             label=f"bound: the Faust ceiling's CPU plus the per-record step "
                                                   f"alone ({1e6 * step_cpu:.0f} us CPU, {1e6 * step_wall:.0f} us "
                                                   "wall per record, in process, no Kafka, no changelog)"),
            "feast_push": _push_metric(features.push_s, bucket_p99,
                                       "Feast online push, worker without lake sink",
                                       baseline="redis_pipeline"),
            "feast_push_e2e": _push_metric(e2e.push_s, push_p99_ms(m),
                                           "Feast online push, end-to-end run"),
        }  # fmt: skip
        targets: dict[str, Any] = {
            "end_to_end": {"stat": "value", "op": ">=", "value": 20_000, "unit": "events/s"},
            "features_path": {"stat": "value", "op": ">=", "ratio": 0.9},
            "feast_push": {"stat": "p99", "op": "<=", "value": 10, "unit": "ms"},
        }
        baselines: dict[str, Any] = {
            "redis_pipeline": summarize(
                features.bare_push_s or [float("nan")], "ms", scale=1e3,
                label="the same-shaped Redis pipeline (18 HSETs) from an idle thread of the bench "
                      "process every 0.5 s, while the worker without lake sink ran",
            ),
            "aiokafka_loop": {"value": bare, "unit": "events/s",
                              "label": "bare aiokafka consume loop, same broker and records"},
            "faust_ceiling": throughput(n, n / faust_floor, "events/s",
                                        label="Faust ceiling: the worker's Faust tuning, 3 agents that only count"),
            "faust_ceiling_cpu": throughput(n, max(faust_cpu, 1e-9), "events/CPU-s",
                                            label="Faust ceiling, per CPU second of its process"),
            "workers_1": throughput(n_scale, n_scale / scaling[1]["events_per_s"], "events/s",
                                    label=f"1 worker process, {SCALING_PARTITIONS} partitions (features path)"),
        }  # fmt: skip
        if features.cpu_s > 0:
            metrics["features_path_cpu"] = throughput(
                n, features.cpu_s, "events/CPU-s", baseline="faust_ceiling_cpu",
                label="worker without lake sink, per CPU second of its process",
            )  # fmt: skip
        for k in counts[1:]:
            metrics[f"workers_{k}"] = throughput(
                n_scale, n_scale / scaling[k]["events_per_s"], "events/s", baseline="workers_1",
                label=f"{k} worker processes, one group, {SCALING_PARTITIONS} partitions (features path)",
            )  # fmt: skip
        if "error" in quix:
            quix_note = f"Quix Streams: NOT MEASURED - {quix['error'][:600]}"
        else:
            baselines["quix_streams"] = throughput(
                n, quix["fold_s"], "events/s",
                label=f"Quix Streams {quix['quixstreams']}: validate, fold (RocksDB state + changelog), emit; no Feast, no lake",
            )  # fmt: skip
            metrics["features_vs_quix"] = throughput(
                n, features.done_agents - features.first, "events/s", baseline="quix_streams",
                label="worker without lake sink (same figure), against Quix Streams",
            )  # fmt: skip
            targets["features_vs_quix"] = {"stat": "value", "op": ">=", "ratio": 1.2}
            if quix.get("cpu_s") and features.cpu_s > 0:
                baselines["quix_streams_cpu"] = throughput(
                    n, quix["cpu_s"], "events/CPU-s",
                    label="Quix Streams, per CPU second of its process (librdkafka's threads included)",
                )  # fmt: skip
                metrics["features_vs_quix_cpu"] = throughput(
                    n, features.cpu_s, "events/CPU-s", baseline="quix_streams_cpu",
                    label="worker without lake sink, per CPU second, against Quix Streams",
                )  # fmt: skip
            quix_note = (
                f"Quix Streams {quix['quixstreams']} (confluent-kafka {quix['confluent_kafka']}, "
                f"librdkafka {quix['librdkafka']}) ran in its own process with a fresh consumer group "
                f"(session.timeout.ms {settings.kafka_session_timeout_ms}), commit_interval 1 s, "
                f"at-least-once, changelog topics on; {quix['outputs']:,} outputs; the worker's features "
                f"path reached {features_rate / quix['events_per_s']:.2f}x it; "
                f"{_quix_matches(settings, quix, events)}; group join and state setup before "
                f"the first record {quix.get('join_s', 0):.1f} s (outside the clock), final checkpoint "
                f"{quix['final_checkpoint_s']:.2f} s; RSS after the run {quix['rss_mb']:,.0f} MB, peak "
                f"{quix['peak_rss_mb']:,.0f} MB. On Tansu the first JoinGroup after librdkafka's "
                "KIP-394 member-id round trip is answered only after half the session timeout "
                "(23 s at librdkafka's default 45 s), so the peer passes the bench's session timeout"
            )
        scale_note = ", ".join(
            f"{k} worker{'s' if k > 1 else ''} {s['events_per_s']:,.0f} events/s "
            f"(produced at {s['produce_per_s']:,.0f}/s meanwhile)"
            for k, s in scaling.items()
        )
        ratios: dict[str, Any] = {}
        if features.push_s and features.bare_push_s:
            ours, bare_p99 = metrics["feast_push"]["p99"], baselines["redis_pipeline"]["p99"]
            ratios["feast_push"] = {"vs": "redis_pipeline", "stat": "p99", "value": ours / bare_p99}
        return {
            "ratios": ratios,
            "workload": (
                f"{n:,} synthetic events (bars, signals, outcomes; ES, NQ) on {settings.topic_partitions} "
                "partitions, produced before each worker starts; one worker end to end: validate -> river "
                "stream features -> FeatureUpdate -> Feast online (Redis) -> parquet lake (local dir), "
                "offsets committed after upload; the same worker without its lake sink (features path); "
                "then, on the same broker and records, a bare aiokafka loop, the Faust ceiling and a Quix "
                f"Streams app running the same per-record step; scaling: {n_scale:,} events on "
                f"{SCALING_PARTITIONS} partitions, {'/'.join(map(str, counts))} worker processes"
            ),
            "metrics": metrics,
            "baseline": baselines,
            "targets": targets,
            "rss_mb": {
                "streams_worker": e2e.rss_mb,
                "streams_worker_no_sink": features.rss_mb,
                **({"quix_streams": quix["rss_mb"]} if "rss_mb" in quix else {}),
            },
            "notes": (
                f"produce rate {n / produce_s:,.0f} events/s (before any clock); {emitted:,} "
                f"FeatureUpdates emitted, {files:,} lake files; the end-to-end worker is one Faust process "
                "plus its lake sink child process on 2 cores (they share them with Tansu); the features "
                f"path is the same worker without the sink; the Faust ceiling ({faust_floor:,.0f} events/s: "
                "agents that only count, on the same records, with the worker's Faust tuning) bounds what "
                f"any Faust-agent worker reaches on this machine. Scaling (8 partitions): {scale_note}. "
                + quix_note
                + "."
            ),
        }
    finally:
        broker.stop()


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
