"""`tradeloop evaluate` over one simulated month of ES and NQ: the wall time of the whole run.

The workload is the command itself (in this process, its walk in a subprocess):
22 trading days of the sim feed (ES, NQ, the 23-hour Globex day), three arms, a
retrain every day of market time with the `small` profile (each step: stream
features folded, point-in-time dataset, the three fits, ONNX export and parity,
the gate, a signed release to a local store when it passes, the hot swap), then
the report. Quick: 3 days. Baseline in the same process on the same bars: one
`tradeloop backtest` of the rules path (one arm, no training), so the ratio says
what the learning loop and the two extra arms cost.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_S = 15 * 60


def _invoke(command: Any, args: list[str], env: dict[str, str]) -> float:
    from click.testing import CliRunner

    from infra.settings import get_settings

    get_settings.cache_clear()
    t0 = time.perf_counter()
    result = CliRunner().invoke(command, args, env=env)
    elapsed = time.perf_counter() - t0
    get_settings.cache_clear()
    if result.exit_code != 0:
        raise RuntimeError(f"{command.name} failed: {result.output[-2000:]}")
    return elapsed


def run(quick: bool) -> dict[str, Any]:
    import json
    import os

    from trader.cli import backtest
    from training.evaluate.cli import evaluate

    days = 3 if quick else 22
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        root = Path(tmp)
        env = {
            "TRADELOOP_HOME": str(root / "home"),
            "STORE_DIR": str(root / "store"),
            "MANIFEST_HMAC_KEY": "bench-evaluate-hmac-key-0123456789",
            "S3_BUCKET": "",
            "S3_ENDPOINT_URL": "",
            "KAFKA_BOOTSTRAP_SERVERS": "",
        }
        out = root / "run"
        sim = ["--feed", "sim", "--symbols", "ES,NQ", "--seed", "7"]
        total_s = _invoke(
            evaluate,
            [
                *sim,
                "--days",
                str(days),
                "--retrain-every",
                "1d",
                "--out",
                str(out),
                "--no-progress",
            ],
            env,
        )
        summary = json.loads((out / "summary.json").read_text())
        bars = int(summary["run"]["bars"])
        backtest_s = _invoke(
            backtest,
            [*sim, "--bars", str(bars), "--out", str(root / "bt"), "--no-progress", "--no-plot"],
            env,
        )
    steps = summary["steps"]
    train = sorted(s["train_s"] for s in steps)
    arms = {a: m["ALL"]["ALL"] for a, m in summary["arms"].items()}
    return {
        "workload": f"tradeloop evaluate: {days} sim days of ES and NQ ({bars:,} bars), "
        f"retrain every 1d (small profile), three arms, report",
        "metrics": {
            "evaluate_s": {
                "value": round(total_s, 1),
                "unit": "s",
                "higher_is_better": False,
                "label": "whole run (walk, retrains, report)",
                "baseline": "backtest_s",
            },
            "step_train_s": {
                "median": round(train[len(train) // 2], 2) if train else 0.0,
                "max": round(train[-1], 2) if train else 0.0,
                "n": len(train),
                "unit": "s",
                "label": "one retrain step (fold, dataset, fits, export, gate, release)",
            },
        },
        "baseline": {
            "backtest_s": {
                "value": round(backtest_s, 1),
                "unit": "s",
                "label": "tradeloop backtest of the same bars (rules, one arm)",
            }
        },
        "targets": {"evaluate_s": {"stat": "value", "op": "<", "value": TARGET_S, "unit": "s"}},
        "notes": f"{len(steps)} retrain steps, {summary['releases']} releases; PnL USD "
        + ", ".join(f"{a} {m['pnl_usd']:,.0f}" for a, m in arms.items())
        + f"; load average {os.getloadavg()[0]:.1f} at the end (the cores may be shared)",
    }
