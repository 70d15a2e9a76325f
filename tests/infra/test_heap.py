"""The start-up heap is frozen; batch runs and services collect young objects rarely."""

from __future__ import annotations

import gc
import weakref

import pytest

from infra.heap import BATCH_GEN0_OBJECTS, SERVICE_GEN0_OBJECTS, batch_heap, service_heap, settle


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


def test_service_heap_settles_and_keeps_the_young_threshold_raised() -> None:
    before = gc.get_threshold()
    try:
        frozen = service_heap()
        assert frozen >= gc.get_freeze_count() > 1000
        assert gc.get_threshold() == (SERVICE_GEN0_OBJECTS, *before[1:])
        assert service_heap(12_345) >= frozen  # settling again freezes what came since
        assert gc.get_threshold() == (12_345, *before[1:])
        garbage = _Node()
        gone = weakref.ref(garbage)
        del garbage
        gc.collect()  # a cycle made afterwards is still collected
        assert gone() is None
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
