"""End-to-end events/s of one streams worker vs a bare aiokafka consume loop.

Starts its own Tansu broker, uses Redis at 127.0.0.1:6379 for the Feast online
store and a local directory for the lake. Events are produced first; the worker
(a `tradeloop streams worker` subprocess, already running and idle) then consumes
them: validation, stream features, FeatureUpdate emission, Feast pushes and the
parquet lake. The clock runs from the first record consumed until every event is
both folded by the agents and committed to the lake (read from the worker's
Prometheus counters). The ceiling is a bare aiokafka loop reading the same records
from the same broker in the same run.

The Faust ceiling (`bench.faust_ceiling`) is a Faust app with the worker's three
agents that only count, on the same records: no Faust-agent worker can be faster.

The peer is Quix Streams (`bench.stream_peers`, its own process): the same records,
the same per-record step (`streams.processing.process_record`: validate, fold
into `StreamFeatureState` per symbol and strategy, exactly-once positions), state
in Quix's RocksDB store with changelog topics, outputs produced to a topic. It does
no Feast push and no lake, so it compares with the worker's features path. Its
final feature values are read back from its output topic and checked against a
from-scratch fold of the same events.

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
import urllib.request
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from bench import faust_ceiling
from infra.settings import Settings
from tests.kit.harness import WorkerProcess

SOURCE = ("bars", "signals", "outcomes")
REPO_ROOT = Path(__file__).resolve().parent.parent


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


def run(quick: bool = False) -> dict[str, Any]:
    """Measure one worker end to end and the bare consume ceiling; return the numbers."""
    from bench.harness import throughput
    from infra.settings import Settings
    from infra.stack import free_port, start_tansu
    from tests.kit.harness import WorkerProcess, produce, settings_env, wait_for
    from tests.kit.synth import synthetic_events

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
        worker.stop()  # idle from here on; the baseline and the peer get the CPU
        bare = asyncio.run(_bare_consume(settings, n))
        faust_floor = faust_ceiling.measure(
            settings.bootstrap_servers, settings.topic_prefix, n, timeout_s=300 if quick else 1800
        )
        quix = _run_quix(settings, n, tmp, timeout_s=300 if quick else 1800)
        metrics: dict[str, Any] = {}
        if "error" in quix:
            quix_note = f"Quix Streams: NOT MEASURED - {quix['error'][:600]}"
        else:
            metrics["quix_streams"] = throughput(
                n,
                quix["fold_s"],
                "events/s",
                baseline="aiokafka_loop",
                label=(
                    f"Quix Streams {quix['quixstreams']}: validate, fold (RocksDB state + changelog), "
                    "emit; no Feast, no lake"
                ),
            )
            worker_features = n / (done_agents - first)
            quix_note = (
                f"Quix Streams {quix['quixstreams']} (confluent-kafka {quix['confluent_kafka']}, "
                f"librdkafka {quix['librdkafka']}) ran in its own process with a fresh consumer group "
                f"(session.timeout.ms {settings.kafka_session_timeout_ms}), commit_interval 1 s, "
                f"at-least-once, changelog topics on; {quix['outputs']:,} outputs; it reached "
                f"{quix['events_per_s'] / worker_features:.2f}x the worker's features path; "
                f"{_quix_matches(settings, quix, events)}; group join and state setup before "
                f"the first record {quix.get('join_s', 0):.1f} s (outside the clock), final checkpoint "
                f"{quix['final_checkpoint_s']:.2f} s; RSS after the run {quix['rss_mb']:,.0f} MB, peak "
                f"{quix['peak_rss_mb']:,.0f} MB (the worker's RSS is read after its run too). On Tansu the first JoinGroup after librdkafka's "
                "KIP-394 member-id round trip is answered only after half the session timeout "
                "(23 s at librdkafka's default 45 s), so the peer passes the bench's session timeout"
            )
        return {
            "workload": (
                f"{n:,} synthetic events (bars, signals, outcomes; ES, NQ) on {settings.topic_partitions} "
                "partitions; one worker: validate -> river stream features -> FeatureUpdate -> Feast "
                "online (Redis) -> parquet lake (local dir), offsets committed after upload; then, on the "
                "same broker and records, a bare aiokafka loop and a Quix Streams app running the same "
                "per-record step (validate, fold per symbol and strategy, emit)"
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
                "faust_ceiling": throughput(
                    n,
                    n / faust_floor,
                    "events/s",
                    baseline="aiokafka_loop",
                    label="Faust app with the worker's 3 agents that only count (take_events, 1,000)",
                ),
                **metrics,
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
            "rss_mb": {
                "streams_worker": rss_mb,
                **({"quix_streams": quix["rss_mb"]} if "rss_mb" in quix else {}),
            },
            "notes": (
                f"produce rate {n / produce_s:,.0f} events/s (before the clock starts); "
                f"{emitted:,} FeatureUpdates emitted, {files:,} lake files; "
                "the worker is one Faust process plus its lake sink child process; the Faust "
                f"ceiling ({faust_floor:,.0f} events/s: agents that only count, on the same records) "
                "bounds what any Faust-agent worker reaches on this machine. " + quix_note + "."
            ),
        }
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
