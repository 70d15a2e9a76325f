"""The start-up heap is frozen: full collections no longer scan it."""

from __future__ import annotations

import gc
import weakref

from trader.core.heap import settle


class _Node:
    def __init__(self) -> None:
        self.ref: object = self  # a cycle: only the collector can free it


def test_settle_freezes_the_live_heap_and_collects_its_garbage() -> None:
    before = gc.get_freeze_count()
    kept = [_Node() for _ in range(1000)]
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage  # an unreachable cycle: settle's collection frees it, it is not frozen
    try:
        frozen = settle()
        assert frozen >= before + len(kept)
        assert gc.get_freeze_count() == frozen
        tracked = {id(o) for o in gc.get_objects()}
        assert not any(id(n) in tracked for n in kept)  # frozen objects leave the generations
        assert gone() is None
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
    assert any(id(n) in {id(o) for o in gc.get_objects()} for n in kept)
