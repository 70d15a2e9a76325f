"""Instructions per bar under callgrind: the engine (batched, incremental) and backtesting.py.

CPU seconds on a shared machine move by a third from run to run; callgrind counts
instructions, which do not move with the load (they miss what caches cost). Each
workload runs at two sizes under `valgrind --tool=callgrind`, and the difference
over the difference in bars is its marginal count per bar: start-up (imports, the
models, numba's cache, the data frame) cancels out.

    python -m bench.instructions [--bars N] [--only engine_batched,backtesting_py]

Needs valgrind; takes minutes (callgrind runs code about fifty times slower).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("engine_batched", "engine_incremental", "backtesting_py")
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def workload(name: str, n_bars: int, models_dir: str) -> None:
    """Run one workload over `n_bars` bars (the callgrind child); print its event count."""
    from bench.bench_backtest import _backtest, _baseline
    from trader.delivery.models import ModelSet

    if name == "backtesting_py":
        _baseline(n_bars, n_bars // 1380 + 2)
        return
    models = ModelSet.from_dir(models_dir)
    engine, _, _ = _backtest(models, ("ES", "NQ"), n_bars, batched=name == "engine_batched")
    print(json.dumps({"bars": n_bars, "events": engine.events_emitted}))


def _count(name: str, n_bars: int, models_dir: str, out_dir: Path) -> tuple[int, str]:
    """Return the instructions of one workload run under callgrind, and its output."""
    code = f"from bench.instructions import workload; workload({name!r}, {n_bars}, {models_dir!r})"
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out_dir / f'{name}.{n_bars}.out'}",
            sys.executable,
            "-c",
            code,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    found = _REFS.search(out.stderr)
    if found is None:
        raise RuntimeError(
            f"callgrind printed no instruction count for {name}: {out.stderr[-500:]}"
        )
    return int(found.group(1).replace(",", "")), out.stdout


def measure(names: tuple[str, ...], n_bars: int) -> dict[str, dict[str, float]]:
    """Return per workload: instructions per bar between `n_bars` and `2 * n_bars` bars."""
    from bench.bench_backtest import _build_models

    with tempfile.TemporaryDirectory() as tmp:
        models_dir = Path(tmp) / "models"
        models_dir.mkdir()
        _build_models(models_dir)
        runs = [(name, n) for name in names for n in (n_bars, 2 * n_bars)]
        with ThreadPoolExecutor(max_workers=2) as pool:  # one callgrind per core
            counts = list(
                pool.map(lambda run: _count(run[0], run[1], str(models_dir), Path(tmp)), runs)
            )
    result: dict[str, dict[str, float]] = {}
    for i, name in enumerate(names):
        (small, out_small), (large, out_large) = counts[2 * i], counts[2 * i + 1]
        row: dict[str, float] = {"instructions_per_bar": (large - small) / n_bars}
        if name != "backtesting_py":
            events = [
                json.loads(o.strip().splitlines()[-1])["events"] for o in (out_small, out_large)
            ]
            row["events_per_bar"] = (events[1] - events[0]) / n_bars
        result[name] = row
    return result


def main(argv: list[str] | None = None) -> int:
    """Print instructions per bar of each workload and their ratios as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.instructions")
    parser.add_argument(
        "--bars", type=int, default=20_000, help="the smaller size (default 20,000)"
    )
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads, comma-separated")
    args = parser.parse_args(argv)
    names = tuple(n for n in args.only.split(",") if n)
    unknown = set(names) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {sorted(unknown)} (known: {', '.join(WORKLOADS)})")
    result = measure(names, args.bars)
    base = result.get("backtesting_py", {}).get("instructions_per_bar")
    for row in result.values():
        if base:
            row["backtesting_py_over_this"] = base / row["instructions_per_bar"]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
