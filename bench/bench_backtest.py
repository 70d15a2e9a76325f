"""Backtest throughput with the three ONNX models loaded, and the trader's memory.

The workload is `tradeloop backtest`'s code path: the sim feed (ES and NQ, the
23-hour Globex day) streamed through the engine with models from
`bench_decision.build_models` (built in a subprocess, so sklearn never enters this
process and the RSS is the trader's), trades recorded, no lake output. Taken
signals go to the paper venue as bracket orders, whose order events (submitted,
accepted, filled, cancelled) the engine publishes like every other fact. 1M bars
(quick: 50k) through the incremental path (`Engine.run`, live trading's: the
trader's RSS is read after it), then batched as `tradeloop backtest` runs
(`trader.core.tape_run`, its compiled kernel loaded before the clock, as the
models are), then the same number of bars of ES alone and four times as many
bars of both (scaling). Each run enters `batch_heap` first, as `tradeloop
backtest` does (the heap frozen, cycles collected rarely). The feed is drawn in chunks outside the engine's clock (backtesting.py, too,
gets its bars before its clock starts) and timed on its own. Baselines: the feed,
and backtesting.py running an SMA cross on the ES bars (a vectorised-indicator,
per-bar-loop library that has no features, models, counterfactuals or events).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

CHUNK = 65_536  # bars drawn from the feed before each timed stretch of the engine
PAIRS = 3  # (backtesting.py in a fresh process, the batched engine) pairs; the median counts


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


def _baseline(n_bars: int, days: int) -> None:
    """Print backtesting.py's (bars, wall s, CPU s) on `n_bars` sim ES bars as JSON."""
    import json

    from trader.feeds.sim import SimFeed

    feed = SimFeed(("ES",), seed=1, days=days)
    bars = [b for _, b in zip(range(n_bars), feed, strict=False)]
    print(json.dumps(_backtesting_py(bars)))


def _backtesting_py_fresh(n_bars: int, days: int) -> tuple[int, float, float]:
    """Run backtesting.py in a fresh process; return (bars, wall s, CPU s).

    A fresh process each time: in this one, after the engine's runs, its per-bar
    loop ran from 44k to 96k bars per CPU second from one run to the next.
    """
    import json

    root = Path(__file__).resolve().parent.parent
    code = f"from bench.bench_backtest import _baseline; _baseline({n_bars}, {days})"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=root, capture_output=True, text=True
    )
    n, wall, cpu = json.loads(out.stdout.strip().splitlines()[-1])
    return int(n), float(wall), float(cpu)


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


def _backtest(
    models: Any,
    symbols: tuple[str, ...],
    n_bars: int,
    *,
    signals: bool = True,
    batched: bool = True,
) -> tuple[Any, int, dict[str, float]]:
    """Run `n_bars` sim bars of `symbols` as `tradeloop backtest` does; return engine, n, clocks.

    `signals=False` runs the engine without its strategies: features, the venue and
    the bookkeeping of every bar, and no candidate, decision or event.
    `batched=False` runs the incremental path (`Engine.run`, features bar by bar)
    instead of `tradeloop backtest`'s batched one (`trader.core.tape_run`).

    The feed is drawn in chunks of `CHUNK` bars outside the engine's clock, as
    backtesting.py gets its data frame before its clock starts; the clocks are the
    engine's wall and CPU seconds and the feed's.
    """
    from infra.heap import batch_heap
    from trader.feeds.sim import SimFeed

    days = n_bars // (23 * 60 * len(symbols)) + 1
    engine, _ = _engine(models, symbols)
    if not signals:
        engine.strategies = {s: [] for s in symbols}
    run: Any = engine.run
    if batched:  # numba enters the process only here (the incremental run's RSS is the trader's)
        from features.tape import load_kernel
        from trader.core.tape_run import run_batched

        load_kernel()  # start-up, as the models' loading: numba's cache (features/tape.py)
        run = functools.partial(run_batched, engine)
    feed = iter(SimFeed(symbols, seed=1, days=days))
    clock, cpu = time.perf_counter, time.process_time
    processed = 0
    wall = cpu_s = feed_wall = feed_cpu = 0.0
    with batch_heap():  # as the backtest does before its first bar (infra/heap.py)
        while processed < n_bars:
            t0, c0 = clock(), cpu()
            chunk = list(islice(feed, min(CHUNK, n_bars - processed)))
            t1, c1 = clock(), cpu()
            if not chunk:
                break
            processed += run(chunk)
            t2, c2 = clock(), cpu()
            feed_wall, feed_cpu = feed_wall + t1 - t0, feed_cpu + c1 - c0
            wall, cpu_s = wall + t2 - t1, cpu_s + c2 - c1
        t0, c0 = clock(), cpu()
        engine.finish()
        wall, cpu_s = wall + clock() - t0, cpu_s + cpu() - c0
    clocks = {"wall": wall, "cpu": cpu_s, "feed_wall": feed_wall, "feed_cpu": feed_cpu}
    return engine, processed, clocks


def run(quick: bool = False) -> dict[str, Any]:
    """Time the engine over the sim feed with models; report bars/s, scaling and RSS."""
    import gc

    import psutil

    from bench.harness import throughput
    from trader.delivery.models import ModelSet

    n_bars = 50_000 if quick else 1_000_000
    days = n_bars // (23 * 60 * 2) + 1
    with tempfile.TemporaryDirectory() as tmp:
        _build_models(Path(tmp))
        models = ModelSet.from_dir(tmp)
    proc = psutil.Process()
    rss_start = proc.memory_info().rss / 2**20

    # the incremental path first (features bar by bar, as live trading): the trader's RSS
    # is measured before numba and its LLVM enter the process with the batched runs
    inc_engine, inc_n, inc = _backtest(models, ("ES", "NQ"), n_bars, batched=False)
    rss_end = proc.memory_info().rss / 2**20
    inc_events = inc_engine.events_emitted
    del inc_engine
    gc.unfreeze()  # each run settles its own heap
    # the batched engine and backtesting.py by turns: each pair ran under the same load
    bt_bars = n_bars // 2 if quick else 200_000
    pairs: list[tuple[float, int, dict[str, float], tuple[int, float, float]]] = []
    for k in range(PAIRS):
        bt = _backtesting_py_fresh(bt_bars, days)
        engine, n, clocks = _backtest(models, ("ES", "NQ"), n_bars)
        if k == 0:
            rss_batched = proc.memory_info().rss / 2**20
            decisions = sum(g.signals for (_, s), g in engine.stats.groups.items() if s == "ALL")
            events = engine.events_emitted
        del engine
        gc.unfreeze()
        pairs.append((n / clocks["cpu"] / (bt[0] / bt[2]), n, clocks, bt))
    same_events = inc_events == events
    ordered = sorted(pairs, key=lambda pair: pair[0])
    _, processed, main, (bt_n, bt_s, bt_cpu) = ordered[len(ordered) // 2]
    inc_ratio = inc_n / inc["cpu"] / (processed / main["cpu"])
    # scaling: one symbol, and four times the bars
    _, one_n, one = _backtest(models, ("ES",), n_bars)
    gc.unfreeze()
    long_bars = 4 * n_bars
    _, long_n, long = _backtest(models, ("ES", "NQ"), long_bars)
    gc.unfreeze()
    # where the time goes: the same engine with no strategy (no signal, decision or event)
    _, bare_n, bare = _backtest(models, ("ES", "NQ"), n_bars // 5, signals=False)
    gc.unfreeze()

    elapsed, cpu_s = main["wall"], main["cpu"]
    with_feed_s = elapsed + main["feed_wall"]
    with_feed_cpu = cpu_s + main["feed_cpu"]
    rate, cpu_rate = processed / elapsed, processed / cpu_s

    def per_cpu(n: int, clocks: dict[str, float]) -> float:
        return n / clocks["cpu"] / cpu_rate

    return {
        "workload": (
            f"{processed:,} sim bars (ES+NQ, 23h sessions) through the engine with 3 ONNX models "
            f"(training's standard sizes), {decisions:,} decisions, {events:,} events "
            "(signals, the paper venue's order events, outcomes); batched as `tradeloop "
            "backtest` runs (the features and the strategies' screen a chunk at a time, "
            "trader/core/tape_run.py), then incrementally; the feed drawn in chunks of "
            f"{CHUNK:,} bars outside the engine's clock; then the same on ES alone "
            f"and on {long_bars:,} ES+NQ bars"
        ),
        "metrics": {
            "bars_per_s": throughput(
                processed,
                elapsed,
                "bars/s",
                baseline="backtesting_py",
                label="backtest with models (bars in memory, as backtesting.py's)",
            ),
            "bars_per_cpu_s": throughput(
                processed,
                cpu_s,
                "bars/CPU-s",
                baseline="backtesting_py_cpu",
                label="backtest with models, per CPU second",
            ),
            "bars_per_s_with_feed": throughput(
                processed,
                with_feed_s,
                "bars/s",
                baseline="backtesting_py",
                label="backtest with models, sim feed's bar generation included",
            ),
            "bars_per_cpu_s_with_feed": throughput(
                processed,
                with_feed_cpu,
                "bars/CPU-s",
                baseline="backtesting_py_cpu",
                label="backtest with models, sim feed included, per CPU second",
            ),
            "bars_per_cpu_s_incremental": throughput(
                inc_n,
                inc["cpu"],
                "bars/CPU-s",
                baseline="backtesting_py_cpu",
                label="the same backtest, features bar by bar (Engine.run, live trading's path), "
                "per CPU second",
            ),
            "bars_per_s_one_symbol": throughput(
                one_n, one["wall"], "bars/s", label=f"scaling: {one_n:,} bars of one symbol (ES)"
            ),
            "bars_per_cpu_s_one_symbol": throughput(
                one_n, one["cpu"], "bars/CPU-s", label="scaling: one symbol, per CPU second"
            ),
            "bars_per_s_4x": throughput(
                long_n, long["wall"], "bars/s", label=f"scaling: {long_n:,} bars (ES+NQ)"
            ),
            "bars_per_cpu_s_4x": throughput(
                long_n,
                long["cpu"],
                "bars/CPU-s",
                label=f"scaling: {long_n:,} bars, per CPU second",
            ),
            "bars_per_cpu_s_no_signals": throughput(
                bare_n,
                bare["cpu"],
                "bars/CPU-s",
                baseline="backtesting_py_cpu",
                label=f"{bare_n:,} bars without strategies (features, venue, bookkeeping)",
            ),
            "trader_rss_mb": {
                "value": rss_end,
                "unit": "MB",
                "label": "trader RSS after the incremental run (live trading's path)",
            },
            "batched_rss_mb": {
                "value": rss_batched,
                "unit": "MB",
                "label": "RSS after the batched run (numba and LLVM loaded; backtests only)",
            },
        },
        "baseline": {
            "feed_only": throughput(
                processed, main["feed_wall"], "bars/s", label="sim feed alone (same run)"
            ),
            "backtesting_py": throughput(
                bt_n,
                bt_s,
                "bars/s",
                label=f"backtesting.py SMA cross, {bt_n:,} ES bars (the median pair's)",
            ),
            "backtesting_py_cpu": throughput(
                bt_n,
                bt_cpu,
                "bars/CPU-s",
                label=(
                    "backtesting.py SMA cross, per CPU second (a fresh process, run just before "
                    f"the engine's run of the median pair of {PAIRS})"
                ),
            ),
        },
        "targets": {
            "bars_per_s": {"stat": "value", "op": ">=", "ratio": 1.5},
            "bars_per_cpu_s": {"stat": "value", "op": ">=", "ratio": 1.5},
            "trader_rss_mb": {"stat": "value", "op": "<", "value": 300, "unit": "MB"},
        },
        "rss_mb": {"trader": rss_end, "trader_at_start": rss_start, "batched": rss_batched},
        "notes": (
            "bars/s counts every bar of the 23-hour day (strategies and entries only in regular "
            "hours); bars/CPU-s divides by the process's CPU time, robust when the cores are "
            "shared. backtesting.py's clock starts after its data frame is built, so the engine's "
            f"clock stops while the sim feed generates the next {CHUNK:,} bars (the feed's own "
            f"time: {main['feed_cpu'] / processed * 1e6:.2f} us CPU per bar, "
            f"{main['feed_wall']:.1f} s in all; the *_with_feed rows add it back). "
            f"Per CPU: a bar with no signal path costs {bare['cpu'] / bare_n * 1e6:.2f} us, a bar "
            f"of the full run {cpu_s / processed * 1e6:.2f} us, so the {decisions:,} signals "
            "(decisions, snapshots, orders, counterfactuals followed to their exits, outcomes, "
            "stream features, statistics) and the strategies cost "
            f"{(cpu_s - processed * bare['cpu'] / bare_n) / max(decisions, 1) * 1e6:.0f} us per "
            f"signal, {(cpu_s / processed - bare['cpu'] / bare_n) * 1e6:.2f} us per bar. "
            f"The engine (batched) and backtesting.py ran by turns, {PAIRS} pairs; per CPU "
            "second (engine / backtesting.py = ratio): "
            + "; ".join(
                f"{n / c['cpu']:,.0f} / {b[0] / b[2]:,.0f} = {r:.2f}x" for r, n, c, b in pairs
            )
            + f"; the rows show the median pair. The incremental run: {inc_ratio:.2f}x the "
            "median pair's batched rate; it emitted "
            f"{'the same number of' if same_events else 'a DIFFERENT number of'} events as "
            "the batched runs. "
            f"Scaling per CPU second: one symbol / two = {per_cpu(one_n, one):.2f}, "
            f"{long_n:,} bars / {processed:,} = {per_cpu(long_n, long):.2f} "
            f"(1.00 = linear); wall clock: {one_n / one['wall'] / rate:.2f} and "
            f"{long_n / long['wall'] / rate:.2f}"
        ),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, default=str))
