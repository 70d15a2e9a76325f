"""The machine's latency floor under the decision path: the three models alone, fixed work.

The decision row's absolute target (p99 < 100 us) is below what its baseline, three
bare onnxruntime calls, reaches here. This separates the models from the machine:

- each model's `session.run` back to back, warm, with the trader's session options
  and the collector off (a short sleep every fourth round, as between bars);
- one fixed unit of work (a 60x60 matrix product) timed many times: its p99 over
  its median is the machine's own jitter;
- a thread that only reads the clock for a second: the gaps it sees are the
  virtual machine's interruptions.

    python -m bench.floor [--rounds 20000] [--small]

Prints JSON; medians and p99s in microseconds, by wall clock and thread CPU time.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from typing import Any

import numpy as np

_WARM = 500


def _stats(ns: list[int] | np.ndarray) -> dict[str, float]:
    us = np.asarray(ns, dtype=np.float64) / 1e3
    return {
        "median_us": round(float(np.median(us)), 1),
        "p99_us": round(float(np.percentile(us, 99)), 1),
    }


def models_alone(rounds: int, *, small: bool = False) -> dict[str, Any]:
    """Time each model's bare call, and the three in a row, on random rows."""
    from bench.bench_decision import build_models
    from trader.delivery.models import ModelSet

    with tempfile.TemporaryDirectory() as tmp:
        paths = build_models(tmp, small=small)
        models = ModelSet.from_paths(paths["meta"], paths["exec"], paths["sizer"], release="floor")
    scorers = {"meta": models.meta, "exec": models.exec, "sizer": models.sizer}
    rng = np.random.default_rng(0)
    rows = {k: np.zeros((1, s.n_features), np.float32) for k, s in scorers.items() if s}
    wall: dict[str, list[int]] = {k: [] for k in (*rows, "all3")}
    cpu: dict[str, list[int]] = {k: [] for k in wall}
    pc, tc = time.perf_counter_ns, time.thread_time_ns
    for i in range(rounds + _WARM):
        for row in rows.values():
            row[:] = rng.normal(size=row.shape)
        t_all, c_all = pc(), tc()
        for k, row in rows.items():
            s = scorers[k]
            assert s is not None
            t0, c0 = pc(), tc()
            s.session.run([s.output_name], {s.input_name: row})
            wall[k].append(pc() - t0)
            cpu[k].append(tc() - c0)
        wall["all3"].append(pc() - t_all)
        cpu["all3"].append(tc() - c_all)
        if i % 4 == 0:
            time.sleep(0.0003)
    return {k: {"wall": _stats(wall[k][_WARM:]), "cpu": _stats(cpu[k][_WARM:])} for k in wall}


def fixed_work(rounds: int) -> dict[str, Any]:
    """Time one 60x60 matrix product `rounds` times."""
    rng = np.random.default_rng(1)
    a, b, out = rng.random((60, 60)), rng.random((60, 60)), np.empty((60, 60))
    wall, cpu = np.empty(rounds, np.int64), np.empty(rounds, np.int64)
    pc, tc = time.perf_counter_ns, time.thread_time_ns
    for _ in range(_WARM):
        np.dot(a, b, out=out)
    for i in range(rounds):
        t0, c0 = pc(), tc()
        np.dot(a, b, out=out)
        cpu[i] = tc() - c0
        wall[i] = pc() - t0
        if i % 10 == 0:
            time.sleep(0.0005)
    return {"wall": _stats(wall), "cpu": _stats(cpu)}


def clock_gaps(seconds: float = 1.0, gap_ns: int = 20_000) -> dict[str, Any]:
    """Read the clock in a loop; return the gaps longer than `gap_ns`."""
    pc = time.perf_counter_ns
    gaps: list[int] = []
    last = pc()
    end = last + int(seconds * 1e9)
    while last < end:
        now = pc()
        if now - last > gap_ns:
            gaps.append(now - last)
        last = now
    return {
        "seconds": seconds,
        "gaps_over_us": gap_ns / 1e3,
        "gaps": len(gaps),
        "lost_us": round(sum(gaps) / 1e3, 1),
        "longest_us": round(max(gaps, default=0) / 1e3, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    parser.add_argument("--small", action="store_true", help="training's small-profile models")
    args = parser.parse_args(argv)
    gc.collect()
    gc.disable()
    try:
        out = {
            "models_alone": models_alone(args.rounds, small=args.small),
            "fixed_work": fixed_work(args.rounds * 5),
            "clock_gaps": clock_gaps(),
        }
    finally:
        gc.enable()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
