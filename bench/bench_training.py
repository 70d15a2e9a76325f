"""Training: point-in-time dataset build and the three trainings at 100k and 1M signals.

Workload: a synthetic event lake (`tests.kit.lake`: ES and NQ, 0-3 candidate signals
per bar, every candidate with an outcome, `strategy_stats` stream features stamped
at each exit) written as lake parquet in a local directory. Measured per size:

- dataset: read signals, outcomes and stream features from the lake, the
  point-in-time join of 4 strategies x every decision point, labels and the meta
  and exec matrices (`training.datasets.build_training_data`, as-of join);
- training: `training.pipeline.fit_all` with the standard profile (3 walk-forward
  folds of RandomForest 50 trees depth 8 and GradientBoosting 100 depth-3 trees,
  each capped to its most recent rows; PPO 20k steps on a 2x32 MLP; the three ONNX
  exports with their parity checks).

Baseline (full run only): Feast's own historical retrieval on a 2,000-signal lake,
against the as-of join on the same lake (Feast's dask join is quadratic per key and
runs out of memory at ~250k entity rows, which is why large frames use the as-of join).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any


def _lake(root: Path, n: int, seed: int) -> tuple[str, float]:
    from infra.objectstore import LocalObjectStore
    from tests.kit.lake import write_synthetic_lake

    t0 = time.perf_counter()
    write_synthetic_lake(LocalObjectStore(root), n, seed=seed, payload=False)
    return str(root), time.perf_counter() - t0


def _measure(base: Path, n: int) -> dict[str, Any]:
    from infra.settings import Settings
    from training.config import TrainConfig
    from training.datasets import build_training_data, load_lake
    from training.pipeline import fit_all

    lake, gen_s = _lake(base / f"lake{n}", n, seed=n % 97)
    settings = Settings(LAKE_URI=lake, STORE_DIR=str(base / "store"), TOPIC_PREFIX="bench.")  # type: ignore[call-arg]
    cfg = TrainConfig.for_profile("standard")
    t0 = time.perf_counter()
    data = build_training_data([("real", load_lake("real", lake, settings))], cfg, "asof")
    dataset_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    trained = fit_all(data, cfg)
    train_s = time.perf_counter() - t0
    t = trained.timings_s
    latency = _onnx_latency(trained)
    return {
        **latency,
        "rows": float(len(data.signals)),
        "groups": float(len(data.groups)),
        "generate_s": gen_s,
        "dataset_s": dataset_s,
        "train_s": train_s,
        "meta_fit_s": t.get("meta_fit", 0.0),
        "exec_fit_s": t.get("exec_fit", 0.0),
        "sizer_fit_s": t.get("sizer_fit", 0.0),
        "export_s": t.get("export", 0.0),
        "meta_auc": trained.meta.holdout_metrics["auc"],
        "exec_mae": trained.exec.holdout_metrics["mae"],
        "exec_mae_baseline": trained.exec.holdout_metrics["mae_baseline"],
        "sharpe_uplift": trained.sizer.holdout_metrics["sharpe_uplift"],
    }


def _onnx_latency(trained: Any, calls: int = 3000) -> dict[str, Any]:
    """Return per-call single-row onnxruntime latencies (us) of the three exports."""
    import numpy as np

    from features.vectors import MODEL_IO
    from training.export import onnx_session

    out: dict[str, Any] = {}
    for fam in (trained.meta, trained.exec, trained.sizer):
        sess = onnx_session(fam.exported.onnx_bytes)
        row = np.asarray([fam.exported.probe_input], dtype=np.float32)
        io = MODEL_IO[fam.family]
        for _ in range(200):
            sess.run([io["output"]], {io["input"]: row})
        samples = []
        for _ in range(calls):
            t0 = time.perf_counter()
            sess.run([io["output"]], {io["input"]: row})
            samples.append(time.perf_counter() - t0)
        out[f"onnx_{fam.family}_samples"] = samples
        out[f"onnx_{fam.family}_bytes"] = float(len(fam.exported.onnx_bytes))
    return out


def _feast_vs_asof(base: Path, n: int = 2000) -> tuple[float, float]:
    from infra.settings import Settings
    from training.datasets import _entity_frame, join_stream_features, load_lake

    lake, _ = _lake(base / "feastlake", n, seed=5)
    settings = Settings(LAKE_URI=lake, STORE_DIR=str(base / "store"), TOPIC_PREFIX="benchfeast.")  # type: ignore[call-arg]
    entity = _entity_frame(load_lake("real", lake, settings).signals)
    join_stream_features(entity, lake, settings, "feast")  # import, apply, warm up
    t0 = time.perf_counter()
    join_stream_features(entity, lake, settings, "feast")
    feast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    join_stream_features(entity, lake, settings, "asof")
    asof_s = time.perf_counter() - t0
    return feast_s, asof_s


def run(quick: bool) -> dict[str, Any]:
    """Measure the dataset build and the trainings (quick: 20k signals only)."""
    from bench.harness import summarize

    sizes = [20_000] if quick else [100_000, 1_000_000]
    metrics: dict[str, Any] = {}
    baseline: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    details: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        base = Path(tmp)
        for n in sizes:
            m = _measure(base, n)
            if n == sizes[-1]:
                for fam in ("meta", "exec", "sizer"):
                    metrics[f"onnx_{fam}_call"] = summarize(
                        m.pop(f"onnx_{fam}_samples"),
                        "us",
                        scale=1e6,
                        label=f"onnxruntime {fam} call, 1 row ({int(m[f'onnx_{fam}_bytes']):,} B model)",
                    )
            else:
                for fam in ("meta", "exec", "sizer"):
                    m.pop(f"onnx_{fam}_samples")
            details[str(n)] = m
            tag = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}m"
            metrics[f"dataset_{tag}"] = {
                "value": round(m["dataset_s"], 2),
                "unit": "s",
                "label": f"point-in-time dataset, {n:,} signals",
            }
            metrics[f"train_{tag}"] = {
                "value": round(m["train_s"], 2),
                "unit": "s",
                "label": f"3 trainings + ONNX + parity, {n:,} signals",
            }
            for part in ("meta_fit_s", "exec_fit_s", "sizer_fit_s", "export_s"):
                metrics[f"{part[:-2]}_{tag}"] = {
                    "value": round(m[part], 2),
                    "unit": "s",
                    "label": f"{part[:-2]} ({n:,} signals, all folds)",
                }
            metrics[f"meta_auc_{tag}"] = {
                "value": round(m["meta_auc"], 4),
                "unit": "AUC",
                "higher_is_better": True,
                "label": f"meta holdout AUC ({n:,})",
            }
        big = "1m" if not quick else "20k"
        targets[f"dataset_{big}"] = {"stat": "value", "op": "<", "value": 30, "unit": "s"}
        targets[f"train_{big}"] = {"stat": "value", "op": "<", "value": 120, "unit": "s"}
        if not quick:
            feast_s, asof_s = _feast_vs_asof(base)
            baseline["feast_join_2k"] = {
                "value": round(feast_s, 3),
                "unit": "s",
                "label": "Feast historical join, 2,000 signals",
            }
            metrics["asof_join_2k"] = {
                "value": round(asof_s, 3),
                "unit": "s",
                "label": "as-of join, same 2,000 signals",
                "baseline": "feast_join_2k",
            }
    return {
        "workload": "synthetic lake, ES+NQ, "
        + " and ".join(f"{n:,}" for n in sizes)
        + " signals; standard profile (3 walk-forward folds)",
        "metrics": metrics,
        "baseline": baseline,
        "targets": targets,
        "details": details,
        "notes": "Model sizes: RF 50 trees depth 8 (each on a half bootstrap) on the most recent 100k decision points; "
        "GB 100 depth-3 trees (Huber, subsample 0.5, max features 0.5) on the most recent 40k signals; PPO 20k steps, "
        "2x32 tanh MLP. Lake generation time is not counted (details.generate_s).",
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=2))
