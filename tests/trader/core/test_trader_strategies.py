"""The strategy contract suite: every strategy through the same checks."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from features.compute import WARMUP_BARS, MarketFeatures
from infra.contracts import STRATEGIES
from trader.core.instruments import BUILTIN
from trader.core.strategies import STRATEGY_CLASSES, Candidate
from trader.feeds.sim import SimFeed

SYMBOLS = ("ES", "NQ")
N_BARS = 4 * 23 * 60  # four simulated days per symbol


def _bars(seed: int, symbol: str, n: int) -> list:
    return list(itertools.islice((b for b in SimFeed(SYMBOLS, seed=seed) if b.symbol == symbol), n))


def _signals(strategy_id: str, symbol: str, bars: list) -> list[tuple[int, Candidate]]:
    f = MarketFeatures(symbol)
    strategy = STRATEGY_CLASSES[strategy_id](BUILTIN[symbol])
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


@pytest.mark.parametrize(("strategy_id", "symbol"), CASES)
def test_no_look_ahead(bars: dict, strategy_id: str, symbol: str) -> None:
    full = bars[(21, symbol)]
    cut = len(full) // 2
    with_future = [(i, c) for i, c in _signals(strategy_id, symbol, full) if i < cut]
    alone = _signals(strategy_id, symbol, full[:cut])
    assert alone == with_future


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
