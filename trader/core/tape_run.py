"""A batched backtest: the features and the strategies' screen for a chunk at once.

`Engine.run` updates each symbol's features bar by bar (`MarketFeatures.push`)
and asks the four strategies on every tradeable bar, as live trading must. A
backtest knows its bars ahead, so `run_batched` computes a chunk's features with
the compiled tape (`features.tape.TapeFeatures`, bit for bit the incremental
values) and every strategy's direction over the chunk's arrays
(`Strategy.directions`). Then each bar goes through `Engine.step`, the same code
the incremental path runs: the venue, the counterfactuals, the trade book, the
risk limits, and, on the bars where some direction is not 0, the strategies
themselves and the decision path. Tests prove the two runs emit the same events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice
from operator import attrgetter
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from features.tape import TapeFeatures

if TYPE_CHECKING:
    from features.compute import MarketFeatures
    from trader.core.bar import MarketBar
    from trader.core.engine import Engine

__all__ = ["CHUNK_BARS", "BatchedRunError", "run_batched"]

#: Bars read from the feed and computed at once (all symbols together).
CHUNK_BARS = 65_536


_TS = attrgetter("ts_s")
_OHLCV = tuple(attrgetter(k) for k in ("open", "high", "low", "close", "volume"))


class BatchedRunError(RuntimeError):
    """The engine cannot run batched (it already holds incremental state)."""


def _screen(engine: Engine, symbol: str, tape: TapeFeatures) -> list[bool]:
    """Return, per bar of the tape's chunk, whether the strategies must be asked."""
    cols = tape.cols
    any_side = np.zeros(tape.m, dtype=bool)
    for strategy in engine.strategies[symbol]:
        any_side |= type(strategy).directions(cols) != 0
    lists = tape.lists
    gate = lists.entries_allowed if engine.flatten else lists.in_session
    return (any_side & np.asarray(lists.ready, dtype=bool) & np.asarray(gate, dtype=bool)).tolist()


def _run_chunk(engine: Engine, tapes: dict[str, TapeFeatures], chunk: list[MarketBar]) -> None:
    groups: dict[str, list[MarketBar]] = {s: [] for s in tapes}
    for bar in chunk:
        group = groups.get(bar.symbol)
        if group is not None:
            group.append(bar)
    screens: dict[str, list[bool]] = {}
    for symbol, bars in groups.items():
        if not bars:
            continue
        m = len(bars)
        ts = np.fromiter(map(_TS, bars), np.int64, m)
        tape = tapes[symbol]
        tape.extend(ts, *(np.fromiter(map(get, bars), np.float64, m) for get in _OHLCV))
        screens[symbol] = _screen(engine, symbol, tape)
    cursor = dict.fromkeys(tapes, 0)
    step = engine.step
    for bar in chunk:
        symbol = bar.symbol
        own = tapes.get(symbol)
        if own is None:
            engine.ignored_bars += 1
            continue
        i = cursor[symbol]
        cursor[symbol] = i + 1
        screen = screens[symbol][i]
        if screen:
            own.seek(i)
        else:
            own.session(i)
        step(bar, own, screen)


def run_batched(
    engine: Engine,
    bars: Iterable[MarketBar],
    max_bars: int | None = None,
    progress: Callable[[int], None] | None = None,
    chunk_bars: int = CHUNK_BARS,
) -> int:
    """Process bars as `Engine.run` does, a chunk's features at once; return how many.

    The engine's features become tapes for good: start with a fresh engine and
    go on batched (a later call continues where the last one stopped).
    """
    held = cast("dict[str, Any]", engine.features)
    tapes = {s: f for s, f in held.items() if isinstance(f, TapeFeatures)}
    if len(tapes) < len(held):
        if engine.bars or engine.ignored_bars:
            raise BatchedRunError(
                f"the engine already processed {engine.bars} bars incrementally; "
                "a batched run needs a fresh engine"
            )
        tapes = {s: TapeFeatures(s) for s in held}
    # the engine reads its features through MarketFeatures' attributes, which a tape has
    engine.features = cast("dict[str, MarketFeatures]", cast(Any, tapes))
    it = iter(bars)
    n = 0
    while max_bars is None or n < max_bars:
        want = chunk_bars if max_bars is None else min(chunk_bars, max_bars - n)
        chunk = list(islice(it, want))
        if not chunk:
            break
        _run_chunk(engine, tapes, chunk)
        n += len(chunk)
        if progress is not None:
            progress(n)
    return n
