"""A backtest's engine makes no reference cycles: `batch_heap` may collect rarely."""

from __future__ import annotations

import gc
import itertools
from pathlib import Path

import pytest

from bench.bench_decision import build_models
from infra.settings import Settings
from trader.core.engine import Engine, EngineConfig
from trader.core.tape_run import run_batched
from trader.delivery.models import ModelHolder, ModelSet
from trader.feeds.sim import SimFeed


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "incremental"])
def test_a_backtest_makes_no_reference_cycles(batched: bool, tmp_path: Path) -> None:
    """`batch_heap`'s premise: a cycle would now live until 200,000 objects later."""
    build_models(tmp_path, small=True, seed=3)
    engine = Engine(
        Settings(_env_file=None),  # type: ignore[call-arg]
        EngineConfig(run_id="heap", source="sim", record_metrics=False),
        ModelHolder(ModelSet.from_dir(tmp_path)),
        sinks=[lambda topic, ev: None],
    )
    bars = list(itertools.islice(iter(SimFeed(("ES", "NQ"), seed=4)), 6 * 23 * 60 * 2))
    run = (lambda b: run_batched(engine, b, chunk_bars=5_000)) if batched else engine.run
    run(bars[:2_000])  # first calls (onnxruntime, numba, the calendar) build their caches
    garbage: list[object] = []
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run(bars[2_000:])
        engine.finish()
        gc.collect()
        garbage.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert engine.events_emitted > 1_000
    assert not garbage, f"{len(garbage)} objects in cycles, e.g. {[type(o) for o in garbage[:5]]}"
