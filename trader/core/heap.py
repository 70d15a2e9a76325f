"""The heap after start-up: collect once, then freeze what is alive.

Models, sessions, settings, the calendar and the imported modules live for the whole
run. `gc.freeze()` moves them to the permanent generation, so the collector's
full (generation 2) passes scan only what the run itself allocates, not the start-up
heap; a backtest of 300k bars spent about 0.26 s in one such pass without it.
The trader (`tradeloop trade`) and the backtest call `settle` once, after their
engine is built and before the first bar.
"""

from __future__ import annotations

import gc

__all__ = ["settle"]


def settle() -> int:
    """Collect garbage once, freeze the survivors; return how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
