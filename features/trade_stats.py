"""Trade statistics: one incremental accumulator and one batch function over closed trades.

Every figure the trader, the report, the monitor and training give about a run of
trades comes from here. A trade is a `(pnl_usd, r_multiple)` pair taken in close
order. Definitions:

- a win is a trade with `pnl_usd > 0`, a loss one with `pnl_usd < 0`;
- profit factor = gross wins / gross losses in USD (None without wins or losses,
  infinite with wins and no losses);
- drawdown = running peak of the cumulative sum minus the cumulative sum, the peak
  starting at zero (flat before the first trade); reported as a magnitude (>= 0);
- Sharpe = mean / sample standard deviation (ddof=1) per trade; None with fewer
  than two values or a standard deviation at or below `FLAT_SD`.

`TradeAccumulator.add` folds one trade in O(1) (Welford moments); `trade_stats`
computes the same `TradeSummary` from arrays with numpy. Non-finite values raise
`TradeStatsError`: one NaN would poison every later figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = [
    "FLAT_SD",
    "TradeAccumulator",
    "TradeStatsError",
    "TradeSummary",
    "drawdown_curve",
    "max_drawdown",
    "profit_factor",
    "sharpe_ratio",
    "trade_stats",
]

#: A standard deviation at or below this is flat: its Sharpe ratio is undefined.
FLAT_SD = 1e-6

Values = Sequence[float] | npt.NDArray[np.floating] | npt.NDArray[np.integer]


class TradeStatsError(ValueError):
    """Raise when trade values are not finite numbers or arrays do not line up."""


@dataclass(frozen=True, slots=True)
class TradeSummary:
    """The statistics of a run of trades (None where a figure is undefined)."""

    trades: int
    wins: int
    losses: int
    win_rate: float | None
    total_r: float
    avg_r: float | None
    pnl_usd: float
    avg_win_usd: float | None
    avg_loss_usd: float | None
    gross_win_usd: float
    gross_loss_usd: float
    profit_factor: float | None
    max_drawdown_usd: float
    max_drawdown_r: float
    sharpe_r: float | None
    sharpe_usd: float | None


def _finite(name: str, value: float) -> float:
    x = float(value)
    if not math.isfinite(x):
        raise TradeStatsError(f"{name} must be a finite number, got {value!r}")
    return x


def _array(name: str, values: Values) -> npt.NDArray[np.float64]:
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise TradeStatsError(f"{name} must be numbers: {exc}") from None
    bad = np.flatnonzero(~np.isfinite(arr))
    if len(bad):
        raise TradeStatsError(
            f"{name} holds {len(bad)} non-finite value(s), the first {arr[bad[0]]!r} "
            f"at position {int(bad[0])}"
        )
    return arr


def profit_factor(gross_win_usd: float, gross_loss_usd: float) -> float | None:
    """Return gross wins / gross losses (both >= 0); None if both are 0, inf if no losses."""
    if gross_loss_usd == 0:
        return None if gross_win_usd == 0 else math.inf
    return gross_win_usd / gross_loss_usd


def _sharpe(mean: float, sd: float, n: int) -> float | None:
    return mean / sd if n >= 2 and sd > FLAT_SD else None


def sharpe_ratio(values: Values) -> float | None:
    """Return mean / sample std (ddof=1) of values; None if fewer than 2 or flat."""
    x = _array("values", values)
    if len(x) < 2:
        return None
    return _sharpe(float(np.mean(x)), float(np.std(x, ddof=1)), len(x))


def drawdown_curve(values: Values) -> npt.NDArray[np.float64]:
    """Return, after each value, how far the cumulative sum lies below its peak (from 0)."""
    eq = np.cumsum(_array("values", values))
    return np.maximum.accumulate(np.maximum(eq, 0.0)) - eq


def max_drawdown(values: Values) -> float:
    """Return the largest fall of the cumulative sum from its running peak (0 if none)."""
    dd = drawdown_curve(values)
    return float(dd.max()) if len(dd) else 0.0


def trade_stats(pnl_usd: Values, r_multiple: Values) -> TradeSummary:
    """Return the statistics of trades given as two aligned arrays in close order."""
    pnl = _array("pnl_usd", pnl_usd)
    r = _array("r_multiple", r_multiple)
    if len(pnl) != len(r):
        raise TradeStatsError(
            f"pnl_usd has {len(pnl)} values but r_multiple has {len(r)}; one per trade each"
        )
    n = len(pnl)
    won, lost = pnl[pnl > 0], pnl[pnl < 0]
    gross_win, gross_loss = float(won.sum()), 0.0 - float(lost.sum())
    return TradeSummary(
        trades=n,
        wins=len(won),
        losses=len(lost),
        win_rate=len(won) / n if n else None,
        total_r=float(r.sum()),
        avg_r=float(r.mean()) if n else None,
        pnl_usd=float(pnl.sum()),
        avg_win_usd=float(won.mean()) if len(won) else None,
        avg_loss_usd=float(lost.mean()) if len(lost) else None,
        gross_win_usd=gross_win,
        gross_loss_usd=gross_loss,
        profit_factor=profit_factor(gross_win, gross_loss),
        max_drawdown_usd=max_drawdown(pnl),
        max_drawdown_r=max_drawdown(r),
        sharpe_r=sharpe_ratio(r),
        sharpe_usd=sharpe_ratio(pnl),
    )


@dataclass(slots=True)
class _Moments:
    """Count, mean and sum of squared deviations (Welford)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)

    def sharpe(self) -> float | None:
        if self.n < 2:
            return None
        return _sharpe(self.mean, math.sqrt(max(self.m2, 0.0) / (self.n - 1)), self.n)


@dataclass(slots=True)
class _Curve:
    """A cumulative sum with its running peak (from 0) and largest drawdown."""

    total: float = 0.0
    peak: float = 0.0
    max_drawdown: float = 0.0

    def add(self, x: float) -> None:
        total = self.total = self.total + x
        if total > self.peak:  # max(peak, total), without the call
            self.peak = total
        drawdown = self.peak - total
        if drawdown > self.max_drawdown:
            self.max_drawdown = drawdown


@dataclass(slots=True)
class TradeAccumulator:
    """Fold trades one at a time (in close order); `summary()` equals `trade_stats`."""

    wins: int = 0
    losses: int = 0
    gross_win_usd: float = 0.0
    gross_loss_usd: float = 0.0
    _usd: _Curve = field(default_factory=_Curve)
    _r: _Curve = field(default_factory=_Curve)
    _usd_moments: _Moments = field(default_factory=_Moments)
    _r_moments: _Moments = field(default_factory=_Moments)

    def add(self, pnl_usd: float, r_multiple: float) -> None:
        """Count one closed trade; raise TradeStatsError (and count nothing) if not finite."""
        pnl = _finite("pnl_usd", pnl_usd)
        r = _finite("r_multiple", r_multiple)
        if pnl > 0:
            self.wins += 1
            self.gross_win_usd += pnl
        elif pnl < 0:
            self.losses += 1
            self.gross_loss_usd -= pnl
        self._usd.add(pnl)
        self._r.add(r)
        self._usd_moments.add(pnl)
        self._r_moments.add(r)

    @property
    def trades(self) -> int:
        """Return how many trades were counted."""
        return self._r_moments.n

    @property
    def pnl_usd(self) -> float:
        """Return the summed PnL in USD."""
        return self._usd.total

    @property
    def total_r(self) -> float:
        """Return the summed R-multiples."""
        return self._r.total

    @property
    def win_rate(self) -> float | None:
        """Return wins / trades (None before the first trade)."""
        return self.wins / self.trades if self.trades else None

    @property
    def avg_r(self) -> float | None:
        """Return the mean R-multiple (None before the first trade)."""
        return self._r.total / self.trades if self.trades else None

    @property
    def max_drawdown_usd(self) -> float:
        """Return the largest drawdown of the USD equity curve so far."""
        return self._usd.max_drawdown

    def summary(self) -> TradeSummary:
        """Return every statistic of the trades counted so far."""
        n = self.trades
        return TradeSummary(
            trades=n,
            wins=self.wins,
            losses=self.losses,
            win_rate=self.win_rate,
            total_r=self._r.total,
            avg_r=self.avg_r,
            pnl_usd=self._usd.total,
            avg_win_usd=self.gross_win_usd / self.wins if self.wins else None,
            avg_loss_usd=-self.gross_loss_usd / self.losses if self.losses else None,
            gross_win_usd=self.gross_win_usd,
            gross_loss_usd=self.gross_loss_usd,
            profit_factor=profit_factor(self.gross_win_usd, self.gross_loss_usd),
            max_drawdown_usd=self._usd.max_drawdown,
            max_drawdown_r=self._r.max_drawdown,
            sharpe_r=self._r_moments.sharpe(),
            sharpe_usd=self._usd_moments.sharpe(),
        )
