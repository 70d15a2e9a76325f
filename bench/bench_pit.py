"""Point-in-time dataset: the out-of-core DuckDB engine against the in-memory as-of join.

Workload: synthetic event lakes (`tests.kit.lake.synthetic_frames`: ES and NQ,
0-3 candidate signals per bar, every candidate with an outcome, `strategy_stats`
stamped at each exit) of 1M and 10M signals, written as lake parquet files (the
lake's schema, key layout and zstd). The 10M lake is one generated 1M chunk's
files repeated ten times, each copy moved on by whole days past the previous
one's last day, with its own event ids and Kafka offsets running on; each copy's
stream features start from zero again (a fresh fold), which a join does not care
about.

Each measurement is `training.datasets.build_training_data` over the lake (read,
dedupe, outcome join, the point-in-time join of 4 strategies x every decision
point, labels, the meta and exec frames) in a child process of its own, so its
peak RSS (`os.wait4`, the child's `getrusage`) is that build's alone. The
in-memory engine is not run at 10M: its peak at 1M times ten is past this
machine's 24 GB.

`BENCH_PIT_LAKES=DIR` keeps the generated lakes in DIR between runs;
`BENCH_PIT_SIZES=10000000` runs only the lakes of those sizes;
`BENCH_PIT_MAX_POINTS=N` also builds each lake with frames bounded to the most
recent N decision points (`TrainConfig.max_points`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHUNK = 1_000_000
_CHILD = """
import json, logging, sys, threading, time
from infra.settings import Settings
from training.config import TrainConfig
from training.datasets import build_training_data, load_lake
lake, engine, home = sys.argv[1], sys.argv[2], sys.argv[3]
max_points = int(sys.argv[4]) or None
peaks = {"join": 0.0, "frames": 0.0}
phase = ["join"]
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmRSS")) / 1024
def sample():
    while True:
        peaks[phase[0]] = max(peaks[phase[0]], rss_mb())
        time.sleep(0.02)
class Phase(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("hand-over"):
            peaks["join"] = max(peaks["join"], rss_mb())
            phase[0] = "frames"
log = logging.getLogger("training.pit_duckdb")
log.setLevel(logging.DEBUG)
log.addHandler(Phase())
threading.Thread(target=sample, daemon=True).start()
settings = Settings(LAKE_URI=lake, STORE_DIR=home, TOPIC_PREFIX="benchpit.")
cfg = TrainConfig.for_profile("standard", max_points=max_points)
t0 = time.perf_counter()
data = build_training_data([("real", load_lake("real", lake, settings))], cfg, engine)
elapsed = time.perf_counter() - t0
peaks[phase[0]] = max(peaks[phase[0]], rss_mb())
shallow = data.signals.memory_usage().sum() + data.groups.memory_usage().sum()
print(json.dumps({"seconds": elapsed, "signals": len(data.signals), "groups": len(data.groups),
                  "frames_mb": (data.signals.memory_usage(deep=True).sum()
                                + data.groups.memory_usage(deep=True).sum()) / 2**20,
                  "frames_shallow_mb": shallow / 2**20,
                  "rss_after_mb": rss_mb(),
                  "phase_peak_mb": peaks if engine == "duckdb" else {},
                  "counts": data.counts}))
"""


def write_lake(root: Path, n_signals: int, seed: int = 11) -> dict[str, int]:
    """Write a lake of `n_signals` signals in chunks of 1M; return rows per topic.

    Chunk 0 is generated and written per topic, day and symbol. Every further chunk
    is chunk 0's files again, moved on by whole days past chunk 0's last day (so
    each file keeps its day), with its own event ids and Kafka offsets running on.
    A lake directory that already holds chunk 0 (a 1M lake) is extended.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from infra.lake import lake_key, parse_key

    done = root / "_complete.json"
    if done.exists():
        return dict(json.loads(done.read_text()))
    if not any(root.rglob("*.parquet")):
        _write_chunk(root, min(CHUNK, n_signals), seed)
    files = sorted(root.rglob("*.parquet"))
    infos = [parse_key(str(p.relative_to(root))) for p in files]
    rows: dict[tuple[str, int], int] = {}
    counts: dict[str, int] = {}
    days = [dt.date.fromisoformat(str(i["date"])) for i in infos if i]
    span_days = (max(days) - min(days)).days + 1
    for info in infos:
        assert info is not None
        key = (str(info["topic"]), int(info["partition"]))
        rows[key] = max(rows.get(key, 0), int(info["last"]) + 1)
        counts[key[0]] = counts.get(key[0], 0) + int(info["last"]) - int(info["first"]) + 1
    chunks = max(1, n_signals // CHUNK)
    for c in range(1, chunks):
        shift = pa.scalar(dt.timedelta(days=span_days * c), pa.duration("us"))
        for info, path in zip(infos, files, strict=True):
            assert info is not None
            topic, part = str(info["topic"]), int(info["partition"])
            step = c * rows[(topic, part)]
            table = pq.read_table(path)
            for i, fld in enumerate(table.schema):
                col = table.column(i)
                if pa.types.is_timestamp(fld.type):
                    col = pc.add(col, shift)
                elif fld.name in ("event_id", "signal_id"):
                    col = pc.binary_join_element_wise(col, f"-{c}", "")
                elif fld.name == "kafka_offset":
                    col = pc.add(col, step)
                else:
                    continue
                table = table.set_column(i, fld.name, col.cast(fld.type))
            day = dt.date.fromisoformat(str(info["date"])) + dt.timedelta(days=span_days * c)
            out_key = lake_key(
                topic,
                day,
                str(info["symbol"]),
                part,
                int(info["first"]) + step,
                int(info["last"]) + step,
            )
            (root / out_key).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, root / out_key, compression="zstd")
    counts = {t: n * chunks for t, n in counts.items()}
    done.write_text(json.dumps(counts))
    return counts


def _write_chunk(root: Path, n_signals: int, seed: int) -> None:
    """Write one generated chunk as the lake lays it out: per topic, day and symbol."""
    import pyarrow.parquet as pq

    from infra.lake import lake_key
    from tests.kit.lake import frame_to_table, synthetic_frames

    for topic, frame in synthetic_frames(n_signals, seed=seed).items():
        f = frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
        f["date"] = f["event_timestamp"].dt.strftime("%Y-%m-%d")
        for p, sym in enumerate(("ES", "NQ")):
            part = f[f["symbol"] == sym].reset_index(drop=True)
            part["kafka_partition"] = p
            part["kafka_offset"] = part.index.to_numpy()
            for day, rows in part.groupby("date", sort=True):
                first, last = int(rows["kafka_offset"].min()), int(rows["kafka_offset"].max())
                path = root / lake_key(topic, str(day), sym, p, first, last)
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(frame_to_table(topic, rows, False), path, compression="zstd")


def measure(lake: Path, engine: str, home: Path, max_points: int | None = None) -> dict[str, Any]:
    """Build the dataset in a child process; return its seconds, rows and peak RSS (MB).

    The peak is the child's own (`os.wait4` returns that child's rusage); DuckDB
    builds also report the peak RSS of each phase, sampled every 20 ms: `join`
    (DuckDB open: reads, joins, labels, the hand-over files) and `frames` (DuckDB
    closed, the frames read back). `max_points` bounds the frames
    (`TrainConfig.max_points`).
    """
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(lake), engine, str(home), str(max_points or 0)],
            stdout=out,
            stderr=err,
            env=env,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} build failed: {stderr.strip()[-2000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    result["rows_per_s"] = result["signals"] / result["seconds"]
    return dict(result)


def run(quick: bool) -> dict[str, Any]:
    """Measure both engines at 1M (and DuckDB at 10M); quick: 50k signals."""
    plan: list[tuple[int, tuple[str, ...]]] = (
        [(50_000, ("asof", "duckdb"))]
        if quick
        else [(1_000_000, ("asof", "duckdb")), (10_000_000, ("duckdb",))]
    )
    only = os.environ.get("BENCH_PIT_SIZES")  # e.g. "10000000": only those lakes
    if only and not quick:
        wanted = {int(x) for x in only.split(",") if x.strip()}
        plan = [(n, e) for n, e in plan if n in wanted]
    window = int(os.environ.get("BENCH_PIT_MAX_POINTS", "0")) or None
    keep = os.environ.get("BENCH_PIT_LAKES")
    tmp = None if keep else tempfile.TemporaryDirectory(prefix="bench-pit-")
    base = Path(keep or tmp.name)  # type: ignore[union-attr]
    metrics: dict[str, Any] = {}
    baseline: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    details: dict[str, Any] = {}
    rss: dict[str, float] = {}
    try:
        for n, engines in plan:
            lake = base / f"lake{n}"
            t0 = time.perf_counter()
            counts = write_lake(lake, n)
            tag = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}m"
            details[tag] = {"generate_s": time.perf_counter() - t0, **counts}
            for engine in engines:
                m = measure(lake, engine, base / "home")
                details[tag][engine] = m
                rss[f"{engine}_{tag}"] = round(m["peak_rss_mb"], 1)
                entry = {
                    "value": round(m["rows_per_s"], 1),
                    "unit": "signals/s",
                    "higher_is_better": True,
                    "label": f"{engine} dataset build, {n:,} signals "
                    f"({m['seconds']:.1f} s, peak RSS {m['peak_rss_mb']:,.0f} MB)",
                }
                if engine == "asof":
                    baseline[f"asof_{tag}"] = entry
                else:
                    metrics[f"duckdb_{tag}"] = entry
                metrics[f"{engine}_{tag}_peak_rss"] = {
                    "value": round(m["peak_rss_mb"], 1),
                    "unit": "MB",
                    "label": f"{engine} peak RSS, {n:,} signals",
                }
            if "asof" in engines:
                metrics[f"duckdb_{tag}"]["baseline"] = f"asof_{tag}"
                targets[f"duckdb_{tag}"] = {"stat": "value", "op": ">=", "ratio": 1.0}
            if window:
                m = measure(lake, "duckdb", base / "home", window)
                details[tag]["duckdb_window"] = m
                metrics[f"duckdb_window_{tag}_peak_rss"] = {
                    "value": round(m["peak_rss_mb"], 1),
                    "unit": "MB",
                    "label": f"duckdb peak RSS, {n:,} signals, frames bounded to the most "
                    f"recent {window:,} decision points ({m['seconds']:.1f} s)",
                }
        if any(n == 10_000_000 for n, _ in plan):
            targets["duckdb_10m_peak_rss"] = {"stat": "value", "op": "<=", "value": 8192}
    finally:
        if tmp is not None:
            tmp.cleanup()
    sizes = " and ".join(f"{n:,}" for n, _ in plan)
    return {
        "workload": f"synthetic lake, ES+NQ, {sizes} signals; build_training_data per engine "
        "in a child process",
        "metrics": metrics,
        "baseline": baseline,
        "targets": targets,
        "rss_mb": rss,
        "details": details,
        "notes": "Peak RSS is the build's child process (its rusage from os.wait4). DuckDB runs with its "
        "default TRAIN_DUCKDB_MEMORY_MB and spills past it. The in-memory as-of engine is "
        "not run at 10M (its 1M peak times ten exceeds the machine's 24 GB). Lake "
        "generation is not counted (details.*.generate_s).",
    }


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
