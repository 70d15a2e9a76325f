"""The four strategies: each turns a symbol's features into candidate signals.

A strategy sees only the current bar's `MarketFeatures` (which holds the past), so
it cannot look ahead. It emits nothing during the feature warm-up, at most one
candidate per bar, and then waits `min_gap_bars` bars before its next one. Stops
and targets are multiples of ATR from the signal bar's close, on the tick grid.

- S2 EmaCross: EMA9 crosses EMA21, confirmed by the 5-bar move in the same direction.
- S3 MeanReversion: close outside the 20-bar Bollinger band (2 std) with RSI(14)
  below 30 (long) or above 70 (short), on the bar the condition starts.
- S6 Breakout: close beyond the previous 60-bar high (low) on volume z > 1.
- S11 Momentum: trend continuation with acceleration: EMA21 slope > 0.3 ATR over
  5 bars, close beyond EMA9, the last 5-bar move > 0.5 ATR and larger than the
  5 bars before it, on the bar the condition starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from features.compute import MarketFeatures
from infra.contracts import STRATEGIES
from trader.core.instruments import Instrument

__all__ = [
    "STRATEGY_CLASSES",
    "Breakout",
    "Candidate",
    "EmaCross",
    "MeanReversion",
    "Momentum",
    "Strategy",
    "build_strategies",
]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A candidate signal: side (+1 long, -1 short), entry, stop and target prices."""

    strategy: str
    side: int
    entry: float
    stop: float
    target: float
    atr: float

    @property
    def side_name(self) -> str:
        """Return `long` or `short`."""
        return "long" if self.side > 0 else "short"

    @property
    def stop_distance(self) -> float:
        """Return the stop distance in points."""
        return abs(self.entry - self.stop)

    @property
    def stop_atr(self) -> float:
        """Return the stop distance in ATRs."""
        return self.stop_distance / self.atr if self.atr > 0 else 0.0

    @property
    def reward_risk(self) -> float:
        """Return the target distance over the stop distance."""
        d = self.stop_distance
        return abs(self.target - self.entry) / d if d > 0 else 0.0


class Strategy:
    """Base: subclasses implement `direction` (+1, -1 or 0) from the features alone.

    A strategy keeps no per-bar state (edge triggers compare the current bar with
    the previous one through `MarketFeatures.prev_*`), so skipping it on bars that
    cannot trade changes none of its signals; only `min_gap_bars` counts from the
    last signal it gave.
    """

    __slots__ = ("_last_signal", "instrument")

    id: str = ""
    name: str = ""
    stop_atr: float = 1.5
    target_atr: float = 2.5
    min_gap_bars: int = 10

    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument
        self._last_signal = -(10**9)

    def direction(self, f: MarketFeatures) -> int:
        """Update state with the current bar and return +1, -1 or 0."""
        raise NotImplementedError

    @classmethod
    def directions(cls, t: Any) -> np.ndarray:
        """Return `direction` for every bar of a feature tape's columns, as int8.

        The batched twin of `direction` (`features.tape`): the same float64
        arithmetic over arrays; tests prove the two equal bar by bar.
        """
        raise NotImplementedError

    def on_bar(self, f: MarketFeatures) -> Candidate | None:
        """Return a candidate for the current bar, or None."""
        side = self.direction(f)
        if side == 0 or f.n < 61 or f.n - self._last_signal < self.min_gap_bars or f.atr <= 0:
            return None
        self._last_signal = f.n
        inst = self.instrument
        tick = inst.tick_size
        entry = f.close
        stop_d = max(tick, inst.round_price(self.stop_atr * f.atr))
        target_d = max(tick, inst.round_price(self.target_atr * f.atr))
        stop = entry - side * stop_d
        if stop <= 0:
            return None
        return Candidate(self.id, side, entry, stop, entry + side * target_d, f.atr)


class EmaCross(Strategy):
    """S2: fast/slow EMA cross with momentum confirmation."""

    __slots__ = ()

    id, name = "S2", "EmaCross"
    stop_atr, target_atr, min_gap_bars = 1.5, 2.5, 10

    def direction(self, f: MarketFeatures) -> int:
        if f.n < 6:
            return 0
        diff = f.ema_fast - f.ema_slow
        prev = f.prev_ema_fast - f.prev_ema_slow
        if prev <= 0.0 < diff and f.close > f.close_ago(5):
            return 1
        if prev >= 0.0 > diff and f.close < f.close_ago(5):
            return -1
        return 0

    @classmethod
    def directions(cls, t: Any) -> np.ndarray:
        diff = t.ema_fast - t.ema_slow
        prev = t.prev_ema_fast - t.prev_ema_slow
        c, c5 = t.close, t.close_ago[:, 5]
        up = (prev <= 0.0) & (diff > 0.0) & (c > c5)
        down = (prev >= 0.0) & (diff < 0.0) & (c < c5)
        return np.where(t.n < 6, 0, np.where(up, 1, np.where(down, -1, 0))).astype(np.int8)


def _band_state(close: float, mid: float, sd: float, rsi: float) -> int:
    if sd > 0.0:
        if close < mid - 2.0 * sd and rsi < 30.0:
            return 1
        if close > mid + 2.0 * sd and rsi > 70.0:
            return -1
    return 0


def _band_states(close: Any, mid: Any, sd: Any, rsi: Any) -> np.ndarray:
    pos = sd > 0.0
    low = pos & (close < mid - 2.0 * sd) & (rsi < 30.0)
    high = pos & (close > mid + 2.0 * sd) & (rsi > 70.0)
    return np.where(low, 1, np.where(high, -1, 0))


class MeanReversion(Strategy):
    """S3: Bollinger band + RSI oversold/overbought."""

    __slots__ = ()

    id, name = "S3", "MeanReversion"
    stop_atr, target_atr, min_gap_bars = 1.25, 1.5, 10

    def direction(self, f: MarketFeatures) -> int:
        state = _band_state(f.close, f.bb_mean, f.bb_std, f.rsi)
        if state == 0 or f.n < 2:
            return 0
        prev = _band_state(f.close_ago(1), f.prev_bb_mean, f.prev_bb_std, f.prev_rsi)
        return state if state != prev else 0

    @classmethod
    def directions(cls, t: Any) -> np.ndarray:
        state = _band_states(t.close, t.bb_mean, t.bb_std, t.rsi)
        prev = _band_states(t.close_ago[:, 1], t.prev_bb_mean, t.prev_bb_std, t.prev_rsi)
        keep = (state != 0) & (t.n >= 2) & (state != prev)
        return np.where(keep, state, 0).astype(np.int8)


class Breakout(Strategy):
    """S6: volume-confirmed breakout of the previous 60-bar range."""

    __slots__ = ()

    id, name = "S6", "Breakout"
    stop_atr, target_atr, min_gap_bars = 1.5, 3.0, 15

    def direction(self, f: MarketFeatures) -> int:
        if f.volume_z <= 1.0:
            return 0
        if f.close > f.prev_high_60:
            return 1
        if f.close < f.prev_low_60:
            return -1
        return 0

    @classmethod
    def directions(cls, t: Any) -> np.ndarray:
        c = t.close
        up = c > t.prev_high_60
        down = ~up & (c < t.prev_low_60)
        out = np.where(up, 1, np.where(down, -1, 0))
        return np.where(t.volume_z <= 1.0, 0, out).astype(np.int8)


def _momentum_state(
    slope: float, close: float, ema_fast: float, recent: float, before: float, atr: float
) -> int:
    if slope > 0.3 and close > ema_fast and recent > 0.5 * atr and recent > before:
        return 1
    if slope < -0.3 and close < ema_fast and recent < -0.5 * atr and recent < before:
        return -1
    return 0


def _momentum_states(
    slope: Any, close: Any, ema_fast: Any, recent: Any, before: Any, atr: Any
) -> np.ndarray:
    up = (slope > 0.3) & (close > ema_fast) & (recent > 0.5 * atr) & (recent > before)
    down = (slope < -0.3) & (close < ema_fast) & (recent < -0.5 * atr) & (recent < before)
    return np.where(up, 1, np.where(down, -1, 0))


class Momentum(Strategy):
    """S11: trend continuation with acceleration."""

    __slots__ = ()

    id, name = "S11", "Momentum"
    stop_atr, target_atr, min_gap_bars = 2.0, 3.0, 20

    def direction(self, f: MarketFeatures) -> int:
        atr = f.atr
        if f.n < 13 or atr <= 0.0:
            return 0
        c, c5 = f.close, f.close_ago(5)
        slope = (f.ema_slow - f.slow_ago(5)) / atr
        state = _momentum_state(slope, c, f.ema_fast, c - c5, c5 - f.close_ago(10), atr)
        if state == 0 or f.prev_atr <= 0.0:
            return 0
        p, p5 = f.close_ago(1), f.close_ago(6)
        prev_slope = (f.prev_ema_slow - f.slow_ago(6)) / f.prev_atr
        prev = _momentum_state(
            prev_slope, p, f.prev_ema_fast, p - p5, p5 - f.close_ago(11), f.prev_atr
        )
        return state if state != prev else 0

    @classmethod
    def directions(cls, t: Any) -> np.ndarray:
        atr, prev_atr, ago = t.atr, t.prev_atr, t.close_ago
        with np.errstate(divide="ignore", invalid="ignore"):  # masked below, as the guards do
            slope = (t.ema_slow - t.slow_ago[:, 5]) / atr
            prev_slope = (t.prev_ema_slow - t.slow_ago[:, 6]) / prev_atr
        c, c5 = t.close, ago[:, 5]
        state = _momentum_states(slope, c, t.ema_fast, c - c5, c5 - ago[:, 10], atr)
        p, p5 = ago[:, 1], ago[:, 6]
        prev = _momentum_states(prev_slope, p, t.prev_ema_fast, p - p5, p5 - ago[:, 11], prev_atr)
        keep = (t.n >= 13) & (atr > 0.0) & (state != 0) & (prev_atr > 0.0) & (state != prev)
        return np.where(keep, state, 0).astype(np.int8)


STRATEGY_CLASSES: dict[str, type[Strategy]] = {
    cls.id: cls for cls in (EmaCross, MeanReversion, Breakout, Momentum)
}
assert tuple(STRATEGY_CLASSES) == STRATEGIES, (
    "strategy order must match features.vectors.STRATEGIES"
)


def build_strategies(instrument: Instrument) -> list[Strategy]:
    """Return one fresh instance of every strategy for a symbol, in STRATEGIES order."""
    return [STRATEGY_CLASSES[s](instrument) for s in STRATEGIES]
