"""The heap after start-up: collect once, then freeze what is alive.

Shared by the trader and the streams worker.

Models, sessions, settings, the calendar and the imported modules live for the whole
run. `gc.freeze()` moves them to the permanent generation, so the collector's
full (generation 2) passes scan only what the run itself allocates, not the start-up
heap; a backtest of 300k bars spent about 0.26 s in one such pass without it.
The trader (`tradeloop trade`) calls `settle` once, after its engine is built and
before the first bar; a backtest enters `batch_heap` there instead.

A backtest's engine makes no reference cycles (a test runs one with the collector
off and finds no cyclic garbage), so the cyclic collector only costs it time: with
CPython's default young-generation threshold of 700 objects it ran about 2,000 times
per 600k bars, 9-10% of the CPU time, mostly re-scanning each chunk's bars and
feature lists. `batch_heap` raises that threshold for the run; should a cycle
appear, it is still collected after `BATCH_GEN0_OBJECTS` net new objects.

The streams worker (`service_heap`, before Faust's worker starts) holds about 400,000 objects
of imported code (Faust, Feast, pandas) and tens of thousands of fetched records
that live a few seconds each: those keep promoting to the oldest generation, and
each full pass re-scanned the whole heap (22 passes, about 4 s of CPU in 100,000
records). Frozen, and with young collections every `SERVICE_GEN0_OBJECTS`, the
passes scan what the run allocates, less often.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["BATCH_GEN0_OBJECTS", "SERVICE_GEN0_OBJECTS", "batch_heap", "service_heap", "settle"]

#: Net new container objects between young collections during a batch run.
BATCH_GEN0_OBJECTS = 200_000
#: Net new container objects between young collections in a long-running service.
SERVICE_GEN0_OBJECTS = 50_000


def settle() -> int:
    """Collect garbage once, freeze the survivors; return how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@contextmanager
def batch_heap() -> Iterator[int]:
    """Settle, then collect cycles only every `BATCH_GEN0_OBJECTS` objects until the block ends.

    Yield the number of objects frozen. The previous thresholds come back on exit.
    """
    frozen = settle()
    before = gc.get_threshold()
    gc.set_threshold(BATCH_GEN0_OBJECTS, *before[1:])
    try:
        yield frozen
    finally:
        gc.set_threshold(*before)


def service_heap(gen0_objects: int = SERVICE_GEN0_OBJECTS) -> int:
    """Settle, then collect young objects every `gen0_objects` for the rest of the process.

    Return the number of objects frozen. For a service whose start-up is over.
    """
    frozen = settle()
    gc.set_threshold(gen0_objects, *gc.get_threshold()[1:])
    return frozen
