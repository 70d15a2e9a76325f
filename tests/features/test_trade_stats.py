"""The trade statistics against references written independently of them.

The references below use pandas (cumsum/cummax, std with ddof=1) and plain loops,
the way empyrical-style libraries define the figures; the module under test uses
numpy (batch) and Welford moments (incremental), so a shared mistake is unlikely.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest

from features.trade_stats import (
    FLAT_SD,
    TradeAccumulator,
    TradeStatsError,
    TradeSummary,
    max_drawdown,
    sharpe_ratio,
    trade_stats,
)

FIELDS = TradeSummary.__dataclass_fields__


def _reference(pnl: list[float], r: list[float]) -> dict[str, object]:
    """Return the figures computed with pandas and loops, not with the module."""
    p, rr = pd.Series(pnl, dtype=float), pd.Series(r, dtype=float)
    n = len(p)

    def dd(s: pd.Series) -> float:
        if s.empty:
            return 0.0
        equity = s.cumsum()
        return float((equity.cummax().clip(lower=0.0) - equity).max())

    def sharpe(s: pd.Series) -> float | None:
        if len(s) < 2:
            return None
        sd = float(s.std(ddof=1))
        return float(s.mean()) / sd if sd > FLAT_SD else None

    gains = sum(x for x in pnl if x > 0)
    losses = -sum(x for x in pnl if x < 0)
    if losses == 0:
        pf: float | None = None if gains == 0 else math.inf
    else:
        pf = gains / losses
    wins = [x for x in pnl if x > 0]
    lost = [x for x in pnl if x < 0]
    return {
        "trades": n,
        "wins": len(wins),
        "losses": len(lost),
        "win_rate": len(wins) / n if n else None,
        "total_r": float(rr.sum()),
        "avg_r": float(rr.mean()) if n else None,
        "pnl_usd": float(p.sum()),
        "avg_win_usd": sum(wins) / len(wins) if wins else None,
        "avg_loss_usd": sum(lost) / len(lost) if lost else None,
        "gross_win_usd": gains,
        "gross_loss_usd": losses,
        "profit_factor": pf,
        "max_drawdown_usd": dd(p),
        "max_drawdown_r": dd(rr),
        "sharpe_r": sharpe(rr),
        "sharpe_usd": sharpe(p),
    }


def _assert_same(got: TradeSummary, want: Mapping[str, object], rel: float = 1e-9) -> None:
    assert set(want) == set(FIELDS)
    for name, expected in want.items():
        value = getattr(got, name)
        if expected is None or isinstance(expected, int):
            assert value == expected, name
        else:
            assert value == pytest.approx(expected, rel=rel, abs=1e-9), name


def _accumulate(pnl: list[float], r: list[float]) -> TradeSummary:
    acc = TradeAccumulator()
    for p, x in zip(pnl, r, strict=True):
        acc.add(p, x)
    return acc.summary()


def _random_trades(seed: int, n: int) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    r = [round(rng.gauss(0.1, 1.2), rng.choice((1, 2, 6))) for _ in range(n)]
    if n > 3:
        r[rng.randrange(n)] = 0.0  # a scratch trade: neither win nor loss
    size = rng.choice((50.0, 250.0, 1000.0))
    return [x * size for x in r], r


def test_a_small_case_computed_by_hand() -> None:
    pnl = [100.0, -50.0, -80.0, 200.0, -20.0]
    r = [1.0, -0.5, -0.8, 2.0, -0.2]
    # equity 100, 50, -30, 170, 150: peak 100 -> trough -30 is the largest fall (130 $, 1.3 R)
    # mean R 0.3; deviations .7 -.8 -1.1 1.7 -.5 -> squares sum 5.48; sd = sqrt(5.48/4)
    hand = {
        "trades": 5,
        "wins": 2,
        "losses": 3,
        "win_rate": 0.4,
        "total_r": 1.5,
        "avg_r": 0.3,
        "pnl_usd": 150.0,
        "avg_win_usd": 150.0,
        "avg_loss_usd": -50.0,
        "gross_win_usd": 300.0,
        "gross_loss_usd": 150.0,
        "profit_factor": 2.0,
        "max_drawdown_usd": 130.0,
        "max_drawdown_r": 1.3,
        "sharpe_r": 0.3 / math.sqrt(5.48 / 4),
        "sharpe_usd": 30.0 / math.sqrt(54800.0 / 4),
    }
    _assert_same(trade_stats(pnl, r), hand)
    _assert_same(_accumulate(pnl, r), hand)


def test_no_trades_and_one_trade() -> None:
    empty = {
        "trades": 0,
        "wins": 0,
        "losses": 0,
        "win_rate": None,
        "total_r": 0.0,
        "avg_r": None,
        "pnl_usd": 0.0,
        "avg_win_usd": None,
        "avg_loss_usd": None,
        "gross_win_usd": 0.0,
        "gross_loss_usd": 0.0,
        "profit_factor": None,
        "max_drawdown_usd": 0.0,
        "max_drawdown_r": 0.0,
        "sharpe_r": None,
        "sharpe_usd": None,
    }
    _assert_same(trade_stats([], []), empty)
    _assert_same(TradeAccumulator().summary(), empty)
    # a single loss: a drawdown from the flat start, no Sharpe, profit factor 0
    for got in (trade_stats([-40.0], [-0.4]), _accumulate([-40.0], [-0.4])):
        assert got.max_drawdown_usd == 40.0 and got.max_drawdown_r == pytest.approx(0.4)
        assert got.sharpe_r is None and got.profit_factor == 0.0 and got.win_rate == 0.0


def test_only_wins_give_an_infinite_profit_factor_and_flat_series_no_sharpe() -> None:
    for got in (trade_stats([10.0] * 4, [0.5] * 4), _accumulate([10.0] * 4, [0.5] * 4)):
        assert got.profit_factor == math.inf
        assert got.sharpe_r is None and got.sharpe_usd is None  # sd 0: undefined, not huge
        assert got.max_drawdown_usd == 0.0
    # values whose float mean is inexact are flat too
    flat = [0.1] * 7
    assert sharpe_ratio(flat) is None and _accumulate(flat, flat).sharpe_r is None


@pytest.mark.parametrize("seed", range(25))
def test_batch_and_incremental_match_the_pandas_reference(seed: int) -> None:
    pnl, r = _random_trades(seed, n=random.Random(seed).choice((2, 3, 17, 200, 2000)))
    want = _reference(pnl, r)
    _assert_same(trade_stats(np.array(pnl), np.array(r)), want)
    _assert_same(_accumulate(pnl, r), want)


def test_incremental_equals_batch_after_every_trade() -> None:
    pnl, r = _random_trades(99, 300)
    acc = TradeAccumulator()
    for i, (p, x) in enumerate(zip(pnl, r, strict=True)):
        acc.add(p, x)
        batch = trade_stats(pnl[: i + 1], r[: i + 1])
        _assert_same(acc.summary(), {name: getattr(batch, name) for name in FIELDS}, rel=1e-9)


def test_sharpe_and_drawdown_primitives_match_numpy_formulas() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0.2, 1.0, 500)
    assert sharpe_ratio(x) == pytest.approx(x.mean() / x.std(ddof=1), rel=1e-12)
    worst = 0.0
    peak = 0.0
    total = 0.0
    for v in x:  # the textbook loop
        total += v
        peak = max(peak, total)
        worst = max(worst, peak - total)
    assert max_drawdown(x) == pytest.approx(worst, rel=1e-12)
    assert max_drawdown([]) == 0.0 and sharpe_ratio([1.0]) is None


def test_bad_values_raise_a_typed_error_and_count_nothing() -> None:
    acc = TradeAccumulator()
    acc.add(10.0, 1.0)
    for pnl, r in ((math.nan, 1.0), (5.0, math.inf)):
        with pytest.raises(TradeStatsError, match="finite"):
            acc.add(pnl, r)
    assert acc.trades == 1 and acc.pnl_usd == 10.0
    with pytest.raises(TradeStatsError, match="position 1"):
        trade_stats([1.0, math.nan], [0.1, 0.2])
    with pytest.raises(TradeStatsError, match="one per trade"):
        trade_stats([1.0, 2.0], [0.1])
    with pytest.raises(TradeStatsError, match="numbers"):
        trade_stats(["a"], [0.1])  # type: ignore[list-item]
