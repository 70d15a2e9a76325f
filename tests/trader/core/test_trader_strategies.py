"""The strategy contract suite: every strategy through the same checks."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence

import pytest

from features.compute import WARMUP_BARS, MarketFeatures
from infra.contracts import STRATEGIES
from trader.core.bar import MarketBar
from trader.core.instruments import BUILTIN, Instrument
from trader.core.strategies import STRATEGY_CLASSES, Candidate, Strategy
from trader.feeds.sim import SimFeed

SYMBOLS = ("ES", "NQ")
N_BARS = 4 * 23 * 60  # four simulated days per symbol

#: Builds a strategy for a run; it is handed the whole series the run will push, so a
#: strategy that reads ahead in it (the test's own `Peeking`) can, and must be caught.
StrategyMaker = Callable[[Sequence[MarketBar]], Strategy]


def _bars(seed: int, symbol: str, n: int) -> list:
    return list(itertools.islice((b for b in SimFeed(SYMBOLS, seed=seed) if b.symbol == symbol), n))


def _maker(strategy_id: str, symbol: str) -> StrategyMaker:
    return lambda _series: STRATEGY_CLASSES[strategy_id](BUILTIN[symbol])


def _signals(
    strategy_id: str | StrategyMaker, symbol: str, bars: Sequence[MarketBar]
) -> list[tuple[int, Candidate]]:
    """Push the bars one at a time; return (bar index, candidate) of every signal."""
    make = _maker(strategy_id, symbol) if isinstance(strategy_id, str) else strategy_id
    f = MarketFeatures(symbol)
    strategy = make(bars)
    out = []
    for i, bar in enumerate(bars):
        f.push(bar.ts_s, bar.open, bar.high, bar.low, bar.close, bar.volume)
        cand = strategy.on_bar(f)
        if cand is not None:
            out.append((i, cand))
    return out


@pytest.fixture(scope="module")
def bars() -> dict[tuple[int, str], list]:
    return {(seed, s): _bars(seed, s, N_BARS) for seed in (21, 22) for s in SYMBOLS}


CASES = [(s, sym) for s in STRATEGIES for sym in SYMBOLS]


@pytest.mark.parametrize(("strategy_id", "symbol"), CASES)
def test_fires_on_the_sim_feed(bars: dict, strategy_id: str, symbol: str) -> None:
    signals = _signals(strategy_id, symbol, bars[(21, symbol)])
    assert len(signals) >= 5, f"{strategy_id} fired {len(signals)} times on {symbol}"
    sides = Counter(c.side for _, c in signals)
    assert sides[1] > 0 and sides[-1] > 0


def _other_future(bars: Sequence[MarketBar], cut: int) -> list[MarketBar]:
    """Return the bars with everything from `cut` on mirrored around the close before it.

    The past is untouched; every later move goes the other way (highs become lows) on
    tripled volume, so anything that reads the future sees a different one.
    """
    pivot2 = 2 * bars[cut - 1].close
    return list(bars[:cut]) + [
        MarketBar(
            b.symbol,
            b.ts_s,
            pivot2 - b.open,
            pivot2 - b.low,
            pivot2 - b.high,
            pivot2 - b.close,
            3 * b.volume + 1,
            b.interval_s,
        )
        for b in bars[cut:]
    ]


def _look_ahead(make: StrategyMaker, symbol: str, bars: Sequence[MarketBar]) -> list[str]:
    """Return how signals before a cut change when only the bars after it change."""
    found = []
    full = _signals(make, symbol, bars)
    for cut in (len(bars) // 4, len(bars) // 2, 3 * len(bars) // 4):
        seen = [(i, c) for i, c in full if i < cut]
        other = _signals(make, symbol, _other_future(bars, cut))
        if [(i, c) for i, c in other if i < cut] != seen:
            found.append(f"signals before bar {cut} change with the bars after it")
        if _signals(make, symbol, bars[:cut]) != seen:
            found.append(f"signals before bar {cut} change when the series ends there")
        # the check means something only if the other future gives other signals
        assert [(i, c) for i, c in other if i >= cut] != [(i, c) for i, c in full if i >= cut]
    return found


class Peeking(Strategy):
    """Deliberately broken: trades in the direction of the close `HORIZON` bars ahead."""

    HORIZON = 30
    id, name = "S2", "Peeking"

    def __init__(self, instrument: Instrument, series: Sequence[MarketBar]) -> None:
        super().__init__(instrument)
        self.series = series

    def direction(self, f: MarketFeatures) -> int:
        ahead = f.n - 1 + self.HORIZON
        if ahead >= len(self.series):
            return 0
        move = self.series[ahead].close - f.close
        return 1 if move > f.atr else -1 if move < -f.atr else 0


@pytest.mark.parametrize(("strategy_id", "symbol"), CASES)
def test_no_look_ahead(bars: dict, strategy_id: str, symbol: str) -> None:
    """Signals up to a bar depend on the bars up to it only, whatever comes after."""
    full = bars[(21, symbol)]
    cut = len(full) // 2
    with_future = [(i, c) for i, c in _signals(strategy_id, symbol, full) if i < cut]
    alone = _signals(strategy_id, symbol, full[:cut])
    assert alone == with_future
    assert _look_ahead(_maker(strategy_id, symbol), symbol, full) == []


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_the_look_ahead_check_catches_a_strategy_that_reads_the_future(
    bars: dict, symbol: str
) -> None:
    full = bars[(21, symbol)]
    found = _look_ahead(lambda series: Peeking(BUILTIN[symbol], series), symbol, full)
    assert any("bars after it" in f for f in found), found
    assert any("series ends there" in f for f in found), found


@pytest.mark.parametrize(("strategy_id", "symbol"), CASES)
def test_deterministic_per_seed(bars: dict, strategy_id: str, symbol: str) -> None:
    first = _signals(strategy_id, symbol, bars[(21, symbol)])
    again = _signals(strategy_id, symbol, _bars(21, symbol, N_BARS))
    other = _signals(strategy_id, symbol, bars[(22, symbol)])
    assert first == again
    assert first != other


@pytest.mark.parametrize(("strategy_id", "symbol"), CASES)
def test_no_signal_during_warmup_and_valid_brackets(
    bars: dict, strategy_id: str, symbol: str
) -> None:
    signals = _signals(strategy_id, symbol, bars[(21, symbol)])
    assert all(i >= WARMUP_BARS - 1 for i, _ in signals)
    tick = BUILTIN[symbol].tick_size
    for _, c in signals:
        assert c.strategy == strategy_id
        assert (c.stop - c.entry) * c.side < 0 < (c.target - c.entry) * c.side
        assert c.stop_distance >= tick and c.reward_risk > 0
        for price in (c.entry, c.stop, c.target):
            assert abs(price / tick - round(price / tick)) < 1e-6
