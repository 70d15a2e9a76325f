"""Snapshot market features: one incremental computation per symbol.

`MarketFeatures.update(bar)` costs O(1) per bar (ring buffers, running moments,
monotonic deques, EMAs in plain floats) and returns a float32 vector ordered as
`features.vectors.FEATURE_NAMES`, or None during the warm-up. Its batch twin,
`features.batch.batch_features`, computes the same values over whole arrays with
numpy; tests prove they agree.

Definitions (t is the current bar, c close, h high, l low, v volume):

- `ret_k`: c[t] / c[t-k] - 1 for k in 1, 5, 15, 60.
- `atr_14`: Wilder average of the true range (seeded with the first bar's range);
  `atr_pct` = atr / c.
- `rv_30`: population std of the last 30 one-bar log returns.
- `rsi_14`: Wilder RSI in [0, 100] (50 when flat).
- `bb_pctb_20`, `bb_width_20`: Bollinger %B and (upper - lower) / mid over 20 closes, 2 std.
- `ema_spread`: (EMA9 - EMA21) / atr; `ema_slope`: (EMA21[t] - EMA21[t-5]) / atr.
- `volume_z_30`: z-score of v over the last 30 volumes.
- `range_pos_60`: (c - min l) / (max h - min l) over the last 60 bars.
- `tod_sin`, `tod_cos`: time of day of the bar close in US/Eastern.
- `session_rth`: the bar closes inside the regular trading hours of its trading day,
  (RTH open, RTH close] from the exchange calendar (`features.calendar`: 09:30-16:00
  ET, early closes included, none on holidays); `session_open_30`: it closes in the
  first `OPEN_WINDOW_MIN` minutes of them.
- `regime_trend`: Kaufman efficiency, (c[t] - c[t-30]) / sum |c[i] - c[i-1]| over 30.
- `regime_vol`: rv_30 / sqrt(EW mean of squared log returns, span 390).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from features.calendar import (
    CLOSED,
    EASTERN,
    ENTRY_CUTOFF_MIN,
    OPEN_WINDOW_MIN,
    calendar,
    utc_offset_s,
)
from infra.contracts import FEATURE_NAMES

__all__ = [
    "EASTERN",
    "ENTRY_CUTOFF_MIN",
    "FEATURE_NAMES",
    "WARMUP_BARS",
    "MarketFeatures",
    "et_clock",
]

EMA_FAST, EMA_SLOW = 9, 21
ATR_N, RSI_N, BB_N, RV_N, VOL_N, RANGE_N, TREND_N, SLOPE_N = 14, 14, 20, 30, 30, 60, 30, 5
LONG_VOL_SPAN = 390
#: Bars needed before the first vector (ret_60 needs 60 earlier closes).
WARMUP_BARS = 61
_RING = 64  # >= 61 closes, a power of two
_RESYNC_EVERY = 4096  # recompute running sums exactly this often (bounds float drift)
_RESYNC_CYCLES = 128
_MASK = _RING - 1
_SLOW_RING = SLOPE_N + 2  # EMA21 of the last 7 bars (strategies look one bar further back)
_ATR_ALPHA, _RSI_ALPHA = 1.0 / ATR_N, 1.0 / RSI_N
_FAST_ALPHA, _SLOW_ALPHA = 2.0 / (EMA_FAST + 1), 2.0 / (EMA_SLOW + 1)
_LONG_ALPHA = 2.0 / (LONG_VOL_SPAN + 1)
_N = len(FEATURE_NAMES)
_TWO_PI = 2.0 * math.pi


_OPEN_WINDOW_S = OPEN_WINDOW_MIN * 60
_ENTRY_CUTOFF_S = ENTRY_CUTOFF_MIN * 60


def et_clock(ts_s: int) -> tuple[int, int, int]:
    """Return (minute of day, weekday Mon=0, trading day number) in US/Eastern.

    The trading day starts at the Globex open the evening before (the exchange
    calendar's), so an evening bar belongs to the next calendar day's session.
    """
    local = ts_s + utc_offset_s(ts_s)
    return (
        (local % 86400) // 60,
        (local // 86400 + 3) % 7,
        (local + calendar().day_shift_s) // 86400,
    )


class _Window:
    """Running mean and population variance over the last `n` values."""

    __slots__ = ("buf", "count", "cycles", "i", "m2", "mean", "n")

    def __init__(self, n: int) -> None:
        self.n = n
        self.buf = [0.0] * n
        self.i = 0
        self.count = 0
        self.cycles = 0
        self.mean = 0.0
        self.m2 = 0.0

    def push(self, x: float) -> float:
        """Add a value; return the population variance of the window."""
        n = self.n
        i = self.i
        buf = self.buf
        mean = self.mean
        if self.count < n:
            count = self.count = self.count + 1
            d = x - mean
            mean += d / count
            self.m2 += d * (x - mean)
            self.mean = mean
            buf[i] = x
        else:
            count = n
            old = buf[i]
            new_mean = mean + (x - old) / n
            self.m2 += (x - old) * (x - new_mean + old - mean)
            self.mean = new_mean
            buf[i] = x
            if i == 0:
                self.cycles += 1
                if self.cycles % _RESYNC_CYCLES == 0:  # bound the float drift
                    mean = math.fsum(buf) / n
                    self.mean = mean
                    self.m2 = math.fsum((v - mean) * (v - mean) for v in buf)
        self.i = i + 1 if i + 1 < n else 0
        m2 = self.m2
        return m2 / count if m2 > 0.0 else 0.0


class MarketFeatures:
    """Incremental snapshot features of one symbol; feed bars in time order."""

    __slots__ = (
        "_absdiff",
        "_absdiff_sum",
        "_bb",
        "_closes",
        "_day_base",
        "_last_entry_s",
        "_maxq",
        "_minq",
        "_rets",
        "_session",
        "_slow_hist",
        "_tz_hour",
        "_tz_offset",
        "_vol",
        "atr",
        "avg_gain",
        "avg_loss",
        "bb_mean",
        "bb_std",
        "close",
        "ema_fast",
        "ema_slow",
        "entries_allowed",
        "high",
        "in_rth",
        "long_var",
        "low",
        "minute_et",
        "n",
        "open",
        "prev_atr",
        "prev_bb_mean",
        "prev_bb_std",
        "prev_ema_fast",
        "prev_ema_slow",
        "prev_high_60",
        "prev_low_60",
        "prev_rsi",
        "rsi",
        "rv",
        "symbol",
        "trading_day",
        "ts_s",
        "volume",
        "volume_z",
        "weekday",
    )

    def __init__(self, symbol: str = "") -> None:
        self.symbol = symbol
        self.n = 0
        self._tz_hour = -1  # UTC hour whose US/Eastern offset is cached (DST turns on whole hours)
        self._tz_offset = 0
        self._closes = [0.0] * _RING
        self._slow_hist = [0.0] * _SLOW_RING
        self._absdiff = [0.0] * TREND_N
        self._absdiff_sum = 0.0
        self._rets = _Window(RV_N)
        self._bb = _Window(BB_N)
        self._vol = _Window(VOL_N)
        self._maxq: deque[tuple[int, float]] = deque()
        self._minq: deque[tuple[int, float]] = deque()
        self.ts_s = 0
        self.minute_et = 0
        self.weekday = 0
        self.trading_day = -1
        self._day_base = 0  # UTC offset + the calendar's trading-day shift, in seconds
        calendar()  # build the exchange calendar now, not on the first bar
        #: Today's (globex open, globex close, rth open, rth close, flags), epoch seconds.
        self._session = CLOSED
        self._last_entry_s = 0  # the last bar close that may open a trade today
        #: Exchange-calendar state of the current bar (see `features.calendar`).
        self.in_rth = False  # the bar closes inside the regular trading hours
        self.entries_allowed = False  # in RTH and at least ENTRY_CUTOFF_MIN before the close
        self.open = self.high = self.low = self.close = self.volume = 0.0
        self.atr = 0.0
        self.ema_fast = self.ema_slow = 0.0
        self.avg_gain = self.avg_loss = 0.0
        self.rsi = 50.0
        self.long_var = 0.0
        self.rv = 0.0  # rv_30
        self.bb_mean = self.bb_std = 0.0  # 20-bar mean and population std of closes
        self.volume_z = 0.0  # 30-bar volume z-score of the current bar
        #: The previous bar's values (strategies compare the two bars).
        self.prev_ema_fast = self.prev_ema_slow = self.prev_atr = 0.0
        self.prev_bb_mean = self.prev_bb_std = 0.0
        self.prev_rsi = 50.0
        #: Highest high / lowest low of the 60 bars before the current one.
        self.prev_high_60 = math.nan
        self.prev_low_60 = math.nan

    @property
    def ready(self) -> bool:
        """Say whether the warm-up is over."""
        return self.n >= WARMUP_BARS

    def close_ago(self, k: int) -> float:
        """Return the close k bars before the current one (k < 64)."""
        return self._closes[(self.n - 1 - k) % _RING]

    def slow_ago(self, k: int) -> float:
        """Return EMA21 k bars before the current one (k <= 6)."""
        return self._slow_hist[(self.n - 1 - k) % _SLOW_RING]

    def update(self, bar: Any) -> np.ndarray | None:
        """Add a bar (attributes open/high/low/close/volume and ts_s or ts_event).

        Return the feature vector, or None while warming up.
        """
        ts = getattr(bar, "ts_s", None)
        if ts is None:
            ts = int(bar.ts_event.timestamp())
        self.push(int(ts), bar.open, bar.high, bar.low, bar.close, bar.volume)
        return self.vector() if self.n >= WARMUP_BARS else None

    def push(self, ts_s: int, o: float, h: float, lo: float, c: float, v: float) -> bool:
        """Add one bar's values; return whether the features are ready."""
        n = self.n
        ring = self._closes
        self.prev_ema_fast, self.prev_ema_slow, self.prev_atr = (
            self.ema_fast,
            self.ema_slow,
            self.atr,
        )
        self.prev_bb_mean, self.prev_bb_std, self.prev_rsi = self.bb_mean, self.bb_std, self.rsi
        if n == 0:
            self.atr = h - lo
            self.ema_fast = self.ema_slow = c
        else:
            prev = ring[(n - 1) & _MASK]
            tr = h - lo
            if h - prev > tr:
                tr = h - prev
            if prev - lo > tr:
                tr = prev - lo
            self.atr += (tr - self.atr) * _ATR_ALPHA
            self.ema_fast += (c - self.ema_fast) * _FAST_ALPHA
            self.ema_slow += (c - self.ema_slow) * _SLOW_ALPHA
            diff = c - prev
            if diff > 0.0:
                gain, loss, ad = diff, 0.0, diff
            else:
                gain, loss, ad = 0.0, -diff, -diff
            if n == 1:
                ag, al = gain, loss
            else:
                ag = self.avg_gain + (gain - self.avg_gain) * _RSI_ALPHA
                al = self.avg_loss + (loss - self.avg_loss) * _RSI_ALPHA
            self.avg_gain, self.avg_loss = ag, al
            if al > 0.0:
                self.rsi = 100.0 - 100.0 / (1.0 + ag / al)
            else:
                self.rsi = 100.0 if ag > 0.0 else 50.0
            lr = math.log(c / prev)
            self.rv = math.sqrt(self._rets.push(lr))
            if n == 1:
                self.long_var = lr * lr
            else:
                self.long_var += (lr * lr - self.long_var) * _LONG_ALPHA
            j = n % TREND_N
            absdiff = self._absdiff
            self._absdiff_sum += ad - absdiff[j]
            absdiff[j] = ad
            if n % _RESYNC_EVERY == 0:
                self._absdiff_sum = math.fsum(absdiff)
        ring[n & _MASK] = c
        self._slow_hist[n % _SLOW_RING] = self.ema_slow
        self.bb_std = math.sqrt(self._bb.push(c))
        self.bb_mean = self._bb.mean
        vsd = math.sqrt(self._vol.push(v))
        self.volume_z = (v - self._vol.mean) / vsd if vsd > 0.0 else 0.0
        # rolling extremes: report the previous 60 bars, then add this one
        maxq, minq = self._maxq, self._minq
        if n:
            oldest = n - RANGE_N
            if maxq[0][0] < oldest:
                maxq.popleft()
            if minq[0][0] < oldest:
                minq.popleft()
            self.prev_high_60 = maxq[0][1]
            self.prev_low_60 = minq[0][1]
            while maxq and maxq[-1][1] <= h:
                maxq.pop()
            while minq and minq[-1][1] >= lo:
                minq.pop()
            if maxq and maxq[0][0] <= oldest:
                maxq.popleft()
            if minq and minq[0][0] <= oldest:
                minq.popleft()
        maxq.append((n, h))
        minq.append((n, lo))
        self.ts_s = ts_s
        self.open, self.high, self.low, self.close, self.volume = o, h, lo, c, v
        hour = ts_s // 3600
        if hour != self._tz_hour:
            self._tz_hour = hour
            self._tz_offset = offset = utc_offset_s(ts_s)
            self._day_base = offset + calendar().day_shift_s
        local = ts_s + self._tz_offset
        self.minute_et = (local % 86400) // 60
        self.weekday = (local // 86400 + 3) % 7
        day = (ts_s + self._day_base) // 86400
        session = self._session
        if day != self.trading_day:
            self.trading_day = day
            session = self._session = calendar().row(day)
            self._last_entry_s = session[3] - _ENTRY_CUTOFF_S
        rth = self.in_rth = session[2] < ts_s <= session[3]
        self.entries_allowed = rth and ts_s <= self._last_entry_s
        self.n = n + 1
        return n >= WARMUP_BARS - 1

    @property
    def in_session(self) -> bool:
        """Say whether Globex trades at the current bar's close (any hour of the session)."""
        session = self._session
        return session[0] < self.ts_s <= session[1]

    @property
    def minutes_to_close(self) -> int:
        """Return the minutes to today's (possibly early) RTH close; -1 on a day without RTH."""
        close_s = self._session[3]
        return (close_s - self.ts_s) // 60 if close_s else -1

    def values(self) -> list[float]:
        """Return the current features as Python floats (valid once ready)."""
        c = self.close
        atr = self.atr
        ring = self._closes
        n = self.n - 1
        ret_1 = c / ring[(n - 1) % _RING] - 1.0
        ret_5 = c / ring[(n - 5) % _RING] - 1.0
        ret_15 = c / ring[(n - 15) % _RING] - 1.0
        ret_60 = c / ring[(n - 60) % _RING] - 1.0
        rv = self.rv
        sd = self.bb_std
        mid = self.bb_mean
        if sd > 0.0:
            pctb = (c - (mid - 2.0 * sd)) / (4.0 * sd)
            width = 4.0 * sd / mid
        else:
            pctb, width = 0.5, 0.0
        if atr > 0.0:
            spread = (self.ema_fast - self.ema_slow) / atr
            old_slow = self._slow_hist[(n - SLOPE_N) % _SLOW_RING]
            slope = (self.ema_slow - old_slow) / atr
        else:
            spread = slope = 0.0
        hi = self._maxq[0][1]
        lo = self._minq[0][1]
        rpos = (c - lo) / (hi - lo) if hi > lo else 0.5
        angle = _TWO_PI * self.minute_et / 1440.0
        if self.in_rth:
            rth = 1.0
            opening = 1.0 if self.ts_s <= self._session[2] + _OPEN_WINDOW_S else 0.0
        else:
            rth = opening = 0.0
        moved = self._absdiff_sum
        trend = (c - ring[(n - TREND_N) % _RING]) / moved if moved > 0.0 else 0.0
        long_sd = math.sqrt(self.long_var) if self.long_var > 0.0 else 0.0
        rvol = rv / long_sd if long_sd > 0.0 else 1.0
        return [
            ret_1,
            ret_5,
            ret_15,
            ret_60,
            atr,
            atr / c,
            rv,
            self.rsi,
            pctb,
            width,
            spread,
            slope,
            self.volume_z,
            rpos,
            math.sin(angle),
            math.cos(angle),
            rth,
            opening,
            trend,
            rvol,
        ]

    def vector(self, out: np.ndarray | None = None) -> np.ndarray:
        """Return the current features as float32 (into `out` if given)."""
        if out is None:
            return np.array(self.values(), dtype=np.float32)
        out[:] = self.values()
        return out
