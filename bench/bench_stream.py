"""End-to-end events/s of one streams worker vs a bare aiokafka consume loop.

Starts its own Tansu broker, uses Redis at 127.0.0.1:6379 for the Feast online
store and a local directory for the lake. Events are produced first; the worker
(a `tradeloop streams worker` subprocess, already running and idle) then consumes
them: validation, stream features, FeatureUpdate emission, Feast pushes and the
parquet lake. The clock runs from the first record consumed until every event is
both folded by the agents and committed to the lake (read from the worker's
Prometheus counters). The ceiling is a bare aiokafka loop reading the same records
from the same broker in the same run.

Run: `.venv/bin/python -m bench.bench_stream [--quick]`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from infra.settings import Settings
from streams.harness import WorkerProcess

SOURCE = ("bars", "signals", "outcomes")


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tradeloop_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _rss_mb(worker: WorkerProcess) -> float:
    import psutil

    if worker.proc is None:
        return 0.0
    try:
        return round(psutil.Process(worker.proc.pid).memory_info().rss / 2**20, 1)
    except psutil.Error:
        return 0.0


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
        start = None
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for msgs in batch.values():
                if msgs and start is None:
                    start = time.perf_counter()
                seen += len(msgs)
        assert start is not None
        return n / (time.perf_counter() - start)
    finally:
        await consumer.stop()


def run(quick: bool = False) -> dict[str, Any]:
    """Measure one worker end to end and the bare consume ceiling; return the numbers."""
    from bench.harness import throughput
    from infra.settings import Settings
    from infra.stack import free_port, start_tansu
    from streams.harness import WorkerProcess, produce, settings_env, wait_for
    from streams.synth import synthetic_events

    n = 10_000 if quick else 200_000
    tmp = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    os.environ.setdefault("TRADELOOP_HOME", str(tmp / "home"))
    broker = start_tansu(log_dir=tmp)
    worker: WorkerProcess | None = None
    try:
        settings = Settings(
            KAFKA_BOOTSTRAP_SERVERS=broker.address,
            TOPIC_PREFIX=f"bench{time.time_ns() % 10**8}.",
            TOPIC_PARTITIONS=4,
            LAKE_URI=str(tmp / "lake"),
            FEAST_REPO_DIR=str(tmp / "repo"),
            REDIS_URL="redis://127.0.0.1:6379/0",
            KAFKA_SESSION_TIMEOUT_MS=10_000,
        )
        port = free_port()
        env = settings_env(settings)
        env["TRADELOOP_HOME"] = str(tmp / "home")
        worker = WorkerProcess(
            settings,
            tmp / "worker.log",
            args=[
                "--metrics-port",
                str(port),
                "--lake-batch-events",
                "20000",
                "--lake-batch-seconds",
                "2",
            ],
            env=env,
        ).start()
        wait_for(
            lambda: "lake sink assigned" in worker.log() and "resync" in worker.log(),
            180,
            0.5,
            "worker ready",
        )  # type: ignore[union-attr]

        events = list(synthetic_events(n))
        t0 = time.perf_counter()
        produce(settings, events)
        produce_s = time.perf_counter() - t0

        first: float | None = None
        done_agents: float | None = None
        done_lake: float | None = None
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline and (done_agents is None or done_lake is None):
            m = _metrics(port)
            now = time.perf_counter()
            folded = _sum(m, "tradeloop_stream_events_in_total", SOURCE)
            landed = _sum(m, "tradeloop_lake_events_written_total", SOURCE)
            if first is None and folded > 0:
                first = now
            if done_agents is None and folded >= n:
                done_agents = now
            if done_lake is None and landed >= n:
                done_lake = now
            time.sleep(0.1)
        if first is None or done_agents is None or done_lake is None:
            raise RuntimeError(f"worker did not finish: {worker.log()[-2000:]}")
        m = _metrics(port)
        end = max(done_agents, done_lake)
        pushes = m.get("tradeloop_feast_push_seconds_count", 0.0)
        push_sum = m.get("tradeloop_feast_push_seconds_sum", 0.0)
        rss_mb = _rss_mb(worker)
        emitted = int(_sum(m, "tradeloop_stream_events_out_total", ("features",)))
        files = int(
            sum(v for k, v in m.items() if k.startswith("tradeloop_lake_files_written_total"))
        )
        bare = asyncio.run(_bare_consume(settings, n))
        return {
            "workload": (
                f"{n:,} synthetic events (bars, signals, outcomes; ES, NQ) on {settings.topic_partitions} "
                "partitions; one worker: validate -> river stream features -> FeatureUpdate -> Feast "
                "online (Redis) -> parquet lake (local dir), offsets committed after upload"
            ),
            "metrics": {
                "end_to_end": throughput(
                    n,
                    end - first,
                    "events/s",
                    baseline="aiokafka_loop",
                    label="one worker, end to end (features + Feast online + lake)",
                ),
                "features_path": throughput(
                    n,
                    done_agents - first,
                    "events/s",
                    baseline="aiokafka_loop",
                    label="Faust agents: validate, fold, emit",
                ),
                "lake_path": throughput(
                    n,
                    done_lake - first,
                    "events/s",
                    baseline="aiokafka_loop",
                    label="lake sink: validate, parquet, upload, commit",
                ),
                "feast_push": {
                    "value": round(1000 * push_sum / pushes, 2) if pushes else 0.0,
                    "unit": "ms/push",
                    "label": f"mean Feast online push ({int(pushes)} batched pushes)",
                },
            },
            "baseline": {
                "aiokafka_loop": {
                    "value": bare,
                    "unit": "events/s",
                    "label": "bare aiokafka consume loop, same broker and records",
                }
            },
            "targets": {
                "end_to_end": {"stat": "value", "op": ">=", "value": 20_000, "unit": "events/s"}
            },
            "rss_mb": {"streams_worker": rss_mb},
            "notes": (
                f"produce rate {n / produce_s:,.0f} events/s (before the clock starts); "
                f"{emitted:,} FeatureUpdates emitted, {files:,} lake files; "
                "the worker is one Python process (Faust agents and the lake sink share one event loop)."
            ),
        }
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
