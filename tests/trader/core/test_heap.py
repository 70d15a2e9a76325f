"""The start-up heap is frozen: full collections no longer scan it."""

from __future__ import annotations

import gc
import weakref

from trader.core.heap import settle


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
