"""The start-up heap is frozen; a backtest's run makes no cycles, so it collects rarely."""

from __future__ import annotations

import gc
import itertools
import weakref
from pathlib import Path

import pytest

from bench.bench_decision import build_models
from infra.settings import Settings
from trader.core.engine import Engine, EngineConfig
from trader.core.heap import BATCH_GEN0_OBJECTS, batch_heap, settle
from trader.core.tape_run import run_batched
from trader.delivery.models import ModelHolder, ModelSet
from trader.feeds.sim import SimFeed


class _Node:
    def __init__(self) -> None:
        self.ref: object = self  # a cycle: only the collector can free it


def _tracked() -> set[int]:
    return {id(o) for o in gc.get_objects()}


def test_settle_freezes_the_live_heap_and_collects_its_garbage() -> None:
    gc.unfreeze()  # whatever an earlier settle in this process froze goes back first
    kept = [_Node() for _ in range(1000)]
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage  # an unreachable cycle: settle's collection frees it, it is not frozen
    try:
        frozen = settle()
        assert frozen >= len(kept)
        # frozen objects another thread lets go of leave the permanent generation
        assert len(kept) <= gc.get_freeze_count() <= frozen
        tracked = _tracked()
        assert not any(id(n) in tracked for n in kept)  # frozen objects leave the generations
        assert gone() is None
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
    tracked = _tracked()
    assert all(id(n) in tracked for n in kept)


def test_batch_heap_settles_raises_the_young_threshold_and_restores_it() -> None:
    before = gc.get_threshold()
    try:
        with batch_heap() as frozen:
            assert frozen >= gc.get_freeze_count() > 1000
            assert gc.get_threshold() == (BATCH_GEN0_OBJECTS, *before[1:])
            garbage = _Node()
            gone = weakref.ref(garbage)
            del garbage
            gc.collect()  # a cycle made in the block is still collected
            assert gone() is None
        assert gc.get_threshold() == before
        with pytest.raises(RuntimeError), batch_heap():
            raise RuntimeError("the run failed")
        assert gc.get_threshold() == before
    finally:
        gc.unfreeze()


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
