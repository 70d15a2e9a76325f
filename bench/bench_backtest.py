"""Backtest throughput with the three ONNX models loaded, and the trader's memory.

The workload is `tradeloop backtest`'s code path: the sim feed (ES and NQ, the
23-hour Globex day) streamed through the engine with models from
`bench_decision.build_models` (built in a subprocess, so sklearn never enters this
process and the RSS is the trader's), trades recorded, no lake output. Taken
signals go to the paper venue as bracket orders, whose order events (submitted,
accepted, filled, cancelled) the engine publishes like every other fact. 1M bars
(quick: 50k), then the same number of bars of ES alone and four times as many
bars of both (scaling). Each run settles the heap first, as `tradeloop backtest`
does. Baselines on the same bars: the feed alone, and backtesting.py
running an SMA cross on the ES bars (a vectorised-indicator, per-bar-loop library
that has no features, models, counterfactuals or events).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _build_models(directory: Path) -> None:
    code = f"from bench.bench_decision import build_models; build_models({str(directory)!r})"
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def _backtesting_py(bars: list[Any]) -> tuple[int, float, float]:
    import pandas as pd
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    frame = pd.DataFrame(
        {
            "Open": [b.open for b in bars],
            "High": [b.high for b in bars],
            "Low": [b.low for b in bars],
            "Close": [b.close for b in bars],
            "Volume": [b.volume for b in bars],
        },
        index=pd.to_datetime([b.ts_s for b in bars], unit="s"),
    )

    def sma(values: Any, n: int) -> Any:
        return pd.Series(values).rolling(n).mean()

    class SmaCross(Strategy):
        def init(self) -> None:
            self.fast = self.I(sma, self.data.Close, 9)
            self.slow = self.I(sma, self.data.Close, 21)

        def next(self) -> None:
            if crossover(self.fast, self.slow):
                self.position.close()
                self.buy()
            elif crossover(self.slow, self.fast):
                self.position.close()
                self.sell()

    t0, c0 = time.perf_counter(), time.process_time()
    Backtest(frame, SmaCross, cash=10_000_000, commission=0.0, finalize_trades=True).run()
    return len(frame), time.perf_counter() - t0, time.process_time() - c0


def _engine(models: Any, symbols: tuple[str, ...]) -> tuple[Any, Any]:
    from infra.settings import Settings
    from trader.backtest import TradeRecorder
    from trader.core.engine import Engine, EngineConfig
    from trader.delivery.models import ModelHolder

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    recorder = TradeRecorder()
    engine = Engine(
        settings,
        EngineConfig(symbols=symbols, source="sim", run_id="bench", record_metrics=False),
        ModelHolder(models),
        sinks=[recorder],
    )
    return engine, recorder


def _backtest(models: Any, symbols: tuple[str, ...], n_bars: int) -> tuple[Any, int, float, float]:
    """Run `n_bars` sim bars of `symbols` as `tradeloop backtest` does; return engine, n, s, CPU s."""
    from trader.core.heap import settle
    from trader.feeds.sim import SimFeed

    days = n_bars // (23 * 60 * len(symbols)) + 1
    engine, _ = _engine(models, symbols)
    settle()  # as the backtest does before its first bar (trader/core/heap.py)
    t0, c0 = time.perf_counter(), time.process_time()
    processed = engine.run(SimFeed(symbols, seed=1, days=days), max_bars=n_bars)
    engine.finish()
    return engine, processed, time.perf_counter() - t0, time.process_time() - c0


def run(quick: bool = False) -> dict[str, Any]:
    """Time the engine over the sim feed with models; report bars/s, scaling and RSS."""
    import gc

    import psutil

    from bench.harness import throughput
    from trader.delivery.models import ModelSet
    from trader.feeds.sim import SimFeed

    n_bars = 50_000 if quick else 1_000_000
    days = n_bars // (23 * 60 * 2) + 1
    with tempfile.TemporaryDirectory() as tmp:
        _build_models(Path(tmp))
        models = ModelSet.from_dir(tmp)
    proc = psutil.Process()
    rss_start = proc.memory_info().rss / 2**20

    t0 = time.perf_counter()
    feed_only = sum(
        1 for _ in zip(range(n_bars), SimFeed(("ES", "NQ"), seed=1, days=days), strict=False)
    )
    feed_s = time.perf_counter() - t0

    engine, processed, elapsed, cpu_s = _backtest(models, ("ES", "NQ"), n_bars)
    rss_end = proc.memory_info().rss / 2**20
    decisions = sum(g.signals for (_, s), g in engine.stats.groups.items() if s == "ALL")
    events = engine.events_emitted
    del engine
    gc.unfreeze()  # each scaling run settles its own heap
    # scaling: one symbol, and four times the bars
    _, one_n, one_s, one_cpu = _backtest(models, ("ES",), n_bars)
    gc.unfreeze()
    long_bars = 4 * n_bars
    _, long_n, long_s, long_cpu = _backtest(models, ("ES", "NQ"), long_bars)
    gc.unfreeze()

    es_bars = [
        b
        for _, b in zip(
            range(n_bars // 2 if quick else 200_000),
            (b for b in SimFeed(("ES",), seed=1, days=days)),
            strict=False,
        )
    ]
    bt_n, bt_s, bt_cpu = _backtesting_py(es_bars)
    rate = processed / elapsed
    return {
        "workload": (
            f"{processed:,} sim bars (ES+NQ, 23h sessions) through the engine with 3 ONNX models "
            f"(training's standard sizes), {decisions:,} decisions, {events:,} events "
            "(signals, the paper venue's order events, outcomes); then the same on ES alone "
            f"and on {long_bars:,} ES+NQ bars"
        ),
        "metrics": {
            "bars_per_s": throughput(
                processed,
                elapsed,
                "bars/s",
                baseline="backtesting_py",
                label="backtest with models (feed included)",
            ),
            "bars_per_cpu_s": throughput(
                processed,
                cpu_s,
                "bars/CPU-s",
                baseline="backtesting_py_cpu",
                label="backtest with models, per CPU second",
            ),
            "bars_per_s_one_symbol": throughput(
                one_n, one_s, "bars/s", label=f"scaling: {one_n:,} bars of one symbol (ES)"
            ),
            "bars_per_cpu_s_one_symbol": throughput(
                one_n, one_cpu, "bars/CPU-s", label="scaling: one symbol, per CPU second"
            ),
            "bars_per_s_4x": throughput(
                long_n, long_s, "bars/s", label=f"scaling: {long_n:,} bars (ES+NQ)"
            ),
            "bars_per_cpu_s_4x": throughput(
                long_n, long_cpu, "bars/CPU-s", label=f"scaling: {long_n:,} bars, per CPU second"
            ),
            "trader_rss_mb": {"value": rss_end, "unit": "MB", "label": "trader RSS after the run"},
        },
        "baseline": {
            "feed_only": throughput(feed_only, feed_s, "bars/s", label="sim feed alone"),
            "backtesting_py": throughput(
                bt_n, bt_s, "bars/s", label=f"backtesting.py SMA cross, {bt_n:,} ES bars"
            ),
            "backtesting_py_cpu": throughput(
                bt_n, bt_cpu, "bars/CPU-s", label="backtesting.py SMA cross, per CPU second"
            ),
        },
        "targets": {
            "bars_per_s": {"stat": "value", "op": ">=", "ratio": 1.5},
            "trader_rss_mb": {"stat": "value", "op": "<", "value": 300, "unit": "MB"},
        },
        "rss_mb": {"trader": rss_end, "trader_at_start": rss_start},
        "notes": (
            "bars/s counts every bar of the 23-hour day (strategies and entries only in regular "
            "hours); bars/CPU-s divides by the process's CPU time, robust when the cores are "
            f"shared. Scaling per CPU second: one symbol / two = {one_n / one_cpu / (processed / cpu_s):.2f}, "
            f"{long_n:,} bars / {processed:,} = {long_n / long_cpu / (processed / cpu_s):.2f} "
            f"(1.00 = linear); wall clock: {one_n / one_s / rate:.2f} and {long_n / long_s / rate:.2f}"
        ),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, default=str))
