"""The batch twin of `features.compute.MarketFeatures`: the same features over whole arrays.

Used as an independent reference: tests check that the incremental features agree
with it bar by bar. Definitions are in `features.compute`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from features.calendar import calendar, utc_offset_s
from features.compute import (
    _N,
    _OPEN_WINDOW_S,
    _TWO_PI,
    ATR_N,
    BB_N,
    EMA_FAST,
    EMA_SLOW,
    LONG_VOL_SPAN,
    RANGE_N,
    RSI_N,
    RV_N,
    SLOPE_N,
    TREND_N,
    VOL_N,
    WARMUP_BARS,
)

__all__ = ["batch_features"]


def _ewm(x: np.ndarray, alpha: float, start: int = 0) -> np.ndarray:
    """Return y[t] = y[t-1] + alpha * (x[t] - y[t-1]), seeded with x[start]."""
    y = np.full(len(x), np.nan)
    if len(x) <= start:
        return y
    acc = float(x[start])
    y[start] = acc
    for t in range(start + 1, len(x)):
        acc += alpha * (float(x[t]) - acc)
        y[t] = acc
    return y


def _lag(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    out[k:] = x[:-k]
    return out


def _rolling(x: np.ndarray, n: int, fn: Any) -> np.ndarray:
    out = np.full(len(x), np.nan)
    if len(x) >= n:
        out[n - 1 :] = fn(np.lib.stride_tricks.sliding_window_view(x, n), axis=1)
    return out


def batch_features(
    ts_s: Sequence[int] | np.ndarray,
    open_: Sequence[float] | np.ndarray,
    high: Sequence[float] | np.ndarray,
    low: Sequence[float] | np.ndarray,
    close: Sequence[float] | np.ndarray,
    volume: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """Return features of every bar of one symbol as float32 [n, len(FEATURE_NAMES)].

    Rows inside the warm-up (the first WARMUP_BARS - 1) are NaN.
    """
    ts = np.asarray(ts_s, dtype=np.int64)
    h = np.asarray(high, dtype=np.float64)
    lo = np.asarray(low, dtype=np.float64)
    c = np.asarray(close, dtype=np.float64)
    v = np.asarray(volume, dtype=np.float64)
    n = len(c)
    out = np.full((n, _N), np.nan, dtype=np.float64)
    if n == 0:
        return out.astype(np.float32)
    prev = _lag(c, 1)
    tr = np.where(
        np.isnan(prev),
        h - lo,
        np.nanmax(np.stack([h - lo, np.abs(h - prev), np.abs(lo - prev)]), axis=0),
    )
    atr = _ewm(tr, 1.0 / ATR_N)
    fast = _ewm(c, 2.0 / (EMA_FAST + 1))
    slow = _ewm(c, 2.0 / (EMA_SLOW + 1))
    diff = c - prev
    gain = _ewm(np.where(diff > 0, diff, 0.0), 1.0 / RSI_N, start=1)
    loss = _ewm(np.where(diff < 0, -diff, 0.0), 1.0 / RSI_N, start=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = np.where(
            loss > 0, 100.0 - 100.0 / (1.0 + gain / loss), np.where(gain > 0, 100.0, 50.0)
        )
        lr = np.log(c / prev)
        rv = np.sqrt(_rolling(lr, RV_N, np.var))
        mid = _rolling(c, BB_N, np.mean)
        sd = np.sqrt(_rolling(c, BB_N, np.var))
        pctb = np.where(sd > 0, (c - (mid - 2 * sd)) / (4 * sd), 0.5)
        width = np.where(sd > 0, 4 * sd / mid, 0.0)
        spread = np.where(atr > 0, (fast - slow) / atr, 0.0)
        slope = np.where(atr > 0, (slow - _lag(slow, SLOPE_N)) / atr, 0.0)
        vsd = np.sqrt(_rolling(v, VOL_N, np.var))
        vz = np.where(vsd > 0, (v - _rolling(v, VOL_N, np.mean)) / vsd, 0.0)
        hi60 = _rolling(h, RANGE_N, np.max)
        lo60 = _rolling(lo, RANGE_N, np.min)
        rpos = np.where(hi60 > lo60, (c - lo60) / (hi60 - lo60), 0.5)
        moved = _rolling(np.abs(diff), TREND_N, np.sum)
        trend = np.where(moved > 0, (c - _lag(c, TREND_N)) / moved, 0.0)
        long_sd = np.sqrt(_ewm(lr * lr, 2.0 / (LONG_VOL_SPAN + 1), start=1))
        rvol = np.where(long_sd > 0, rv / long_sd, 1.0)
        hours, inverse = np.unique(ts // 3600, return_inverse=True)
        offsets = np.array([utc_offset_s(int(hr) * 3600) for hr in hours], dtype=np.int64)[inverse]
    local = ts + offsets
    minute = (local % 86400) // 60
    angle = _TWO_PI * minute / 1440.0
    cal = calendar()
    days, day_of = np.unique((local + cal.day_shift_s) // 86400, return_inverse=True)
    rows = np.array([cal.row(int(d)) for d in days], dtype=np.int64).reshape(-1, 5)[day_of]
    rth_open, rth_close = rows[:, 2], rows[:, 3]
    in_rth = (rth_open < ts) & (ts <= rth_close)
    cols = [
        c / prev - 1.0,
        c / _lag(c, 5) - 1.0,
        c / _lag(c, 15) - 1.0,
        c / _lag(c, 60) - 1.0,
        atr,
        atr / c,
        rv,
        rsi,
        pctb,
        width,
        spread,
        slope,
        vz,
        rpos,
        np.sin(angle),
        np.cos(angle),
        in_rth.astype(np.float64),
        (in_rth & (ts <= rth_open + _OPEN_WINDOW_S)).astype(np.float64),
        trend,
        rvol,
    ]
    for j, col in enumerate(cols):
        out[:, j] = col
    out[: WARMUP_BARS - 1] = np.nan
    return out.astype(np.float32)
