"""Batched twin of `features.compute.MarketFeatures`: a chunk of one symbol's bars at once.

`TapeFeatures.extend` runs a numba kernel that repeats `MarketFeatures.push`
operation for operation (no fastmath; `fsum` is CPython's exactly rounded
`math.fsum`), so every value is bit-for-bit identical, and carries the state
between chunks, so chunk boundaries make no difference. Per bar of the chunk
(the state after that bar's push) it offers:

- `lists` (`TapeLists`): Python lists `ready` (what push returned), `trading_day`,
  `in_rth`, `entries_allowed`, `in_session`, `minutes_to_close`;
- `cols` (`TapeColumns`): float64 views into one row-major array (strided), `n`
  (int64), `close_ago` (m, AGO) and `slow_ago` (m, SLOW_AGO);
- `seek(i)`: the object then reads like a `MarketFeatures` after bar i (plain
  Python attributes, `close_ago`, `slow_ago`, `values`, `vector`, `ready`);
  `session(i)` sets only the calendar attributes.

A bar on which `push` raises (a zero or negative close ratio, an fsum overflow)
makes `extend` raise the same exception type; the object is unusable afterwards.
"""

from __future__ import annotations

import math
import time

import numba
import numpy as np

from features import compute as mf
from features.calendar import calendar, utc_offset_s
from features.exact_sum import fsum
from infra.contracts import FEATURE_NAMES

__all__ = ["AGO", "SLOW_AGO", "TapeColumns", "TapeFeatures", "TapeLists", "fsum", "load_kernel"]

AGO, SLOW_AGO = 12, mf._SLOW_RING  # close_ago(k) for k < AGO, slow_ago(k) for k < SLOW_AGO
#: The per-bar float row: these scalars, then close_ago, slow_ago and values().
_SCALARS = (
    "open", "high", "low", "close", "volume", "atr", "ema_fast", "ema_slow", "avg_gain",
    "avg_loss", "rsi", "long_var", "rv", "bb_mean", "bb_std", "volume_z", "prev_ema_fast",
    "prev_ema_slow", "prev_atr", "prev_bb_mean", "prev_bb_std", "prev_rsi", "prev_high_60",
    "prev_low_60",
)  # fmt: skip
#: `TapeColumns` float columns (views into the row array).
_COLUMNS = (
    "close", "atr", "prev_atr", "ema_fast", "ema_slow", "prev_ema_fast", "prev_ema_slow",
    "bb_mean", "bb_std", "prev_bb_mean", "prev_bb_std", "rsi", "prev_rsi", "volume_z",
    "prev_high_60", "prev_low_60",
)  # fmt: skip
_NS = len(_SCALARS)
_CA = _NS  # first close_ago column
_SA = _CA + AGO  # first slow_ago column
_VA = _SA + SLOW_AGO  # first values() column
_NV = len(FEATURE_NAMES)
_WIDTH = _VA + _NV
_QCAP = 64  # the 60-bar extremes deques never hold more than RANGE_N entries
# state: floats _fs (indices below; windows' mean, m2 at 14..19) and ints _ist
# (n; i, count, cycles of the rets, bb and vol windows at 1..9; maxq head, tail, minq
# head, tail at 10..13)
_ATR, _EF, _ES, _AG, _AL, _RSI, _LV, _RV, _BBM, _BBS, _VZ, _ADS, _PH, _PL = range(14)
# compute's constants reach the kernel as arguments, so its cache never holds stale ones
_FPARAMS = np.array([mf._ATR_ALPHA, mf._RSI_ALPHA, mf._FAST_ALPHA, mf._SLOW_ALPHA, mf._LONG_ALPHA])
_IPARAMS = np.array(
    [mf._RESYNC_EVERY, mf._RESYNC_CYCLES, mf.RANGE_N, mf.SLOPE_N, mf.WARMUP_BARS], np.int64
)
_SIN = np.array([math.sin(mf._TWO_PI * m / 1440.0) for m in range(1440)])
_COS = np.array([math.cos(mf._TWO_PI * m / 1440.0) for m in range(1440)])


@numba.njit(cache=True)
def _window(buf, x, i, count, cycles, mean, m2, resync):  # type: ignore[no-untyped-def]
    """Push x into a running window as `_Window.push`; return (var, i, count, cycles, mean, m2)."""
    n = buf.shape[0]
    if count < n:
        count += 1
        d = x - mean
        mean += d / count
        m2 += d * (x - mean)
        buf[i] = x
    else:
        count = n
        old = buf[i]
        new_mean = mean + (x - old) / n
        m2 += (x - old) * (x - new_mean + old - mean)
        mean = new_mean
        buf[i] = x
        if i == 0:
            cycles += 1
            if cycles % resync == 0:
                mean = fsum(buf) / n
                sq = np.empty(n)
                for j in range(n):
                    sq[j] = (buf[j] - mean) * (buf[j] - mean)
                m2 = fsum(sq)
    i = i + 1 if i + 1 < n else 0
    return (m2 / count if m2 > 0.0 else 0.0), i, count, cycles, mean, m2


@numba.njit(cache=True, error_model="numpy")
def _kernel(o, h, lo, c, v, minute, rth, opening, out, fs, ist, ring, slow, absdiff,
            wr, wb, wv, qi, qv, fp, ip, sin_t, cos_t):  # type: ignore[no-untyped-def]  # fmt: skip
    """Push every bar as `MarketFeatures.push`; write each bar's row into `out`."""
    atr_a, rsi_a, fast_a, slow_a, long_a = fp[0], fp[1], fp[2], fp[3], fp[4]
    resync_every, cyc, range_n, slope_n, warmup = ip[0], ip[1], ip[2], ip[3], ip[4]
    mask = ring.shape[0] - 1
    nslow = slow.shape[0]
    ntrend = absdiff.shape[0]
    si, ti, ri = ist[0] % nslow, ist[0] % ntrend, ist[0] % resync_every  # n % each, kept
    qmask = qi.shape[1] - 1
    sa = _CA + AGO
    va = sa + nslow  # the first values() column
    atr, ema_fast, ema_slow, avg_gain, avg_loss = fs[_ATR], fs[_EF], fs[_ES], fs[_AG], fs[_AL]
    rsi, long_var, rv, bb_mean, bb_std = fs[_RSI], fs[_LV], fs[_RV], fs[_BBM], fs[_BBS]
    volume_z, ad_sum, ph, pl = fs[_VZ], fs[_ADS], fs[_PH], fs[_PL]
    r_mean, r_m2, b_mean, b_m2, v_mean, v_m2 = fs[14], fs[15], fs[16], fs[17], fs[18], fs[19]
    n = ist[0]
    r_i, r_cnt, r_cyc, b_i, b_cnt, b_cyc = ist[1], ist[2], ist[3], ist[4], ist[5], ist[6]
    v_i, v_cnt, v_cyc, mh, mt, nh, nt = ist[7], ist[8], ist[9], ist[10], ist[11], ist[12], ist[13]
    for k in range(c.shape[0]):
        hk, lk, ck, vk = h[k], lo[k], c[k], v[k]
        p_ef, p_es, p_atr, p_bbm, p_bbs, p_rsi = ema_fast, ema_slow, atr, bb_mean, bb_std, rsi
        if n == 0:
            atr = hk - lk
            ema_fast = ema_slow = ck
        else:
            prev = ring[(n - 1) & mask]
            tr = hk - lk
            if hk - prev > tr:
                tr = hk - prev
            if prev - lk > tr:
                tr = prev - lk
            atr += (tr - atr) * atr_a
            ema_fast += (ck - ema_fast) * fast_a
            ema_slow += (ck - ema_slow) * slow_a
            diff = ck - prev
            if diff > 0.0:
                gain, loss, ad = diff, 0.0, diff
            else:
                gain, loss, ad = 0.0, -diff, -diff
            if n == 1:
                avg_gain, avg_loss = gain, loss
            else:
                avg_gain = avg_gain + (gain - avg_gain) * rsi_a
                avg_loss = avg_loss + (loss - avg_loss) * rsi_a
            if avg_loss > 0.0:
                rsi = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
            else:
                rsi = 100.0 if avg_gain > 0.0 else 50.0
            if prev == 0.0:
                raise ZeroDivisionError("float division by zero")
            ratio = ck / prev
            if ratio <= 0.0:
                raise ValueError("math domain error")
            lr = math.log(ratio)
            var, r_i, r_cnt, r_cyc, r_mean, r_m2 = _window(
                wr, lr, r_i, r_cnt, r_cyc, r_mean, r_m2, cyc
            )
            rv = math.sqrt(var)
            if n == 1:
                long_var = lr * lr
            else:
                long_var += (lr * lr - long_var) * long_a
            ad_sum += ad - absdiff[ti]
            absdiff[ti] = ad
            if ri == 0:
                ad_sum = fsum(absdiff)
        ring[n & mask] = ck
        slow[si] = ema_slow
        var, b_i, b_cnt, b_cyc, b_mean, b_m2 = _window(wb, ck, b_i, b_cnt, b_cyc, b_mean, b_m2, cyc)
        bb_std = math.sqrt(var)
        bb_mean = b_mean
        var, v_i, v_cnt, v_cyc, v_mean, v_m2 = _window(wv, vk, v_i, v_cnt, v_cyc, v_mean, v_m2, cyc)
        vsd = math.sqrt(var)
        volume_z = (vk - v_mean) / vsd if vsd > 0.0 else 0.0
        if n:  # rolling extremes: report the previous bars, then add this one
            oldest = n - range_n
            if qi[0, mh & qmask] < oldest:
                mh += 1
            if qi[1, nh & qmask] < oldest:
                nh += 1
            ph = qv[0, mh & qmask]
            pl = qv[1, nh & qmask]
            while mt > mh and qv[0, (mt - 1) & qmask] <= hk:
                mt -= 1
            while nt > nh and qv[1, (nt - 1) & qmask] >= lk:
                nt -= 1
            if mt > mh and qi[0, mh & qmask] <= oldest:
                mh += 1
            if nt > nh and qi[1, nh & qmask] <= oldest:
                nh += 1
        qi[0, mt & qmask] = n
        qv[0, mt & qmask] = hk
        mt += 1
        qi[1, nt & qmask] = n
        qv[1, nt & qmask] = lk
        nt += 1
        row = out[k]
        row[0], row[1], row[2], row[3], row[4] = o[k], hk, lk, ck, vk
        row[5], row[6], row[7], row[8], row[9] = atr, ema_fast, ema_slow, avg_gain, avg_loss
        row[10], row[11], row[12], row[13], row[14] = rsi, long_var, rv, bb_mean, bb_std
        row[15], row[16], row[17], row[18], row[19] = volume_z, p_ef, p_es, p_atr, p_bbm
        row[20], row[21], row[22], row[23] = p_bbs, p_rsi, ph, pl
        for a in range(AGO):
            row[_CA + a] = ring[(n - a) & mask]
        for a in range(nslow):
            row[sa + a] = slow[si - a if si >= a else si - a + nslow]
        if n + 1 >= warmup:
            ret_1 = ck / ring[(n - 1) & mask] - 1.0
            ret_5 = ck / ring[(n - 5) & mask] - 1.0
            ret_15 = ck / ring[(n - 15) & mask] - 1.0
            ret_60 = ck / ring[(n - 60) & mask] - 1.0
            if bb_std > 0.0:
                pctb = (ck - (bb_mean - 2.0 * bb_std)) / (4.0 * bb_std)
                width = 4.0 * bb_std / bb_mean
            else:
                pctb, width = 0.5, 0.0
            if atr > 0.0:
                spread = (ema_fast - ema_slow) / atr
                old_slow = slow[si - slope_n if si >= slope_n else si - slope_n + nslow]
                slope = (ema_slow - old_slow) / atr
            else:
                spread = slope = 0.0
            hi60 = qv[0, mh & qmask]
            lo60 = qv[1, nh & qmask]
            rpos = (ck - lo60) / (hi60 - lo60) if hi60 > lo60 else 0.5
            in_rth = 1.0 if rth[k] else 0.0
            opens = 1.0 if opening[k] else 0.0  # opening implies rth
            trend = (ck - ring[(n - ntrend) & mask]) / ad_sum if ad_sum > 0.0 else 0.0
            long_sd = math.sqrt(long_var) if long_var > 0.0 else 0.0
            rvol = rv / long_sd if long_sd > 0.0 else 1.0
            row[va + 0], row[va + 1], row[va + 2], row[va + 3] = ret_1, ret_5, ret_15, ret_60
            row[va + 4], row[va + 5], row[va + 6], row[va + 7] = atr, atr / ck, rv, rsi
            row[va + 8], row[va + 9], row[va + 10], row[va + 11] = pctb, width, spread, slope
            row[va + 12], row[va + 13] = volume_z, rpos
            row[va + 14], row[va + 15] = sin_t[minute[k]], cos_t[minute[k]]
            row[va + 16], row[va + 17], row[va + 18], row[va + 19] = in_rth, opens, trend, rvol
        else:
            row[va:] = np.nan
        n += 1
        si = si + 1 if si + 1 < nslow else 0
        ti = ti + 1 if ti + 1 < ntrend else 0
        ri = ri + 1 if ri + 1 < resync_every else 0
    fs[_ATR], fs[_EF], fs[_ES], fs[_AG], fs[_AL] = atr, ema_fast, ema_slow, avg_gain, avg_loss
    fs[_RSI], fs[_LV], fs[_RV], fs[_BBM], fs[_BBS] = rsi, long_var, rv, bb_mean, bb_std
    fs[_VZ], fs[_ADS], fs[_PH], fs[_PL] = volume_z, ad_sum, ph, pl
    fs[14], fs[15], fs[16], fs[17], fs[18], fs[19] = r_mean, r_m2, b_mean, b_m2, v_mean, v_m2
    ist[0] = n
    ist[1], ist[2], ist[3], ist[4], ist[5], ist[6] = r_i, r_cnt, r_cyc, b_i, b_cnt, b_cyc
    ist[7], ist[8], ist[9], ist[10], ist[11], ist[12], ist[13] = v_i, v_cnt, v_cyc, mh, mt, nh, nt


class TapeColumns:
    """Per-bar numpy columns of a chunk: float64 views into one row-major array."""

    close: np.ndarray
    atr: np.ndarray
    prev_atr: np.ndarray
    ema_fast: np.ndarray
    ema_slow: np.ndarray
    prev_ema_fast: np.ndarray
    prev_ema_slow: np.ndarray
    bb_mean: np.ndarray
    bb_std: np.ndarray
    prev_bb_mean: np.ndarray
    prev_bb_std: np.ndarray
    rsi: np.ndarray
    prev_rsi: np.ndarray
    volume_z: np.ndarray
    prev_high_60: np.ndarray
    prev_low_60: np.ndarray

    def __init__(self, rows: np.ndarray, n: np.ndarray) -> None:
        for name in _COLUMNS:
            setattr(self, name, rows[:, _SCALARS.index(name)])
        self.n = n  # int64: the bar count after this bar
        self.close_ago = rows[:, _CA:_SA]  # (m, AGO): [i, k] is close_ago(k) after bar i
        self.slow_ago = rows[:, _SA:_VA]  # (m, SLOW_AGO): [i, k] is slow_ago(k)


class TapeLists:
    """Per-bar Python lists of a chunk: what push returned and the calendar state."""

    def __init__(self) -> None:
        self.ready: list[bool] = []
        self.trading_day: list[int] = []
        self.in_rth: list[bool] = []
        self.entries_allowed: list[bool] = []
        self.in_session: list[bool] = []
        self.minutes_to_close: list[int] = []


class TapeFeatures:
    """Batched `MarketFeatures` of one symbol: `extend` by a chunk, then read or `seek`."""

    __slots__ = (
        "_absdiff", "_buf", "_cal", "_day", "_fs", "_i", "_ist", "_n0", "_qi", "_qv", "_ring",
        "_rows", "_session", "_sessions", "_slow", "_tz_hour", "_tz_offset", "_wins", "atr", "avg_gain",
        "avg_loss", "bb_mean", "bb_std", "close", "cols", "ema_fast", "ema_slow",
        "entries_allowed", "high", "in_rth", "in_session", "lists", "long_var", "low", "m",
        "minute_et", "minutes_to_close", "n", "open", "prev_atr", "prev_bb_mean",
        "prev_bb_std", "prev_ema_fast", "prev_ema_slow", "prev_high_60", "prev_low_60",
        "prev_rsi", "rsi", "rv", "symbol", "trading_day", "ts_s", "volume", "volume_z",
        "weekday",
    )  # fmt: skip

    def __init__(self, symbol: str = "") -> None:
        self.symbol = symbol
        calendar()  # build the exchange calendar now, not on the first chunk
        self._fs = np.zeros(20)
        self._fs[[_RSI, _PH, _PL]] = 50.0, math.nan, math.nan
        self._ist = np.zeros(14, np.int64)
        self._ring, self._slow = np.zeros(mf._RING), np.zeros(SLOW_AGO)
        self._absdiff = np.zeros(mf.TREND_N)
        self._wins = (np.zeros(mf.RV_N), np.zeros(mf.BB_N), np.zeros(mf.VOL_N))
        self._qi, self._qv = np.zeros((2, _QCAP), np.int64), np.zeros((2, _QCAP))
        self._tz_hour, self._tz_offset = -1, 0  # the UTC hour whose offset is cached
        self._day, self._session = -1, (0, 0, 0, 0, 0)  # the last bar's trading day, its row
        self._n0 = self.m = self._i = 0  # bars before the chunk, in it, the sought one
        self._rows = np.array([[0.0] * _VA + [math.nan] * _NV])
        self._cal = np.zeros((1, 3), np.int64)
        self._buf = (self._rows[:0], self._cal[:0])  # row buffers, reused by later chunks
        self.lists = TapeLists()
        self._sessions: list[tuple[int, int, bool, bool, bool, int]] = []
        self.cols = TapeColumns(self._rows[:0], np.zeros(0, np.int64))
        self.n = self.ts_s = self.minute_et = self.weekday = 0
        self.trading_day = self.minutes_to_close = -1
        self.in_rth = self.entries_allowed = self.in_session = False
        self.open = self.high = self.low = self.close = self.volume = 0.0
        self.atr = self.ema_fast = self.ema_slow = self.avg_gain = self.avg_loss = 0.0
        self.long_var = self.rv = self.bb_mean = self.bb_std = self.volume_z = 0.0
        self.prev_ema_fast = self.prev_ema_slow = self.prev_atr = 0.0
        self.prev_bb_mean = self.prev_bb_std = 0.0
        self.rsi = self.prev_rsi = 50.0
        self.prev_high_60 = self.prev_low_60 = math.nan

    def _runs(self, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return where each run of equal `key` starts and the runs' lengths."""
        first = np.concatenate(([0], np.flatnonzero(key[1:] != key[:-1]) + 1))
        return first, np.diff(np.append(first, key.shape[0]))

    def _calendar(self, ts: np.ndarray) -> tuple[np.ndarray, list[int], np.ndarray]:
        """Return per-bar local time, trading day (a list) and session rows, as `push`."""
        hour = ts // 3600
        first, lengths = self._runs(hour)
        offsets = []
        tz_hour, tz_offset = self._tz_hour, self._tz_offset
        for hr, t in zip(hour[first].tolist(), ts[first].tolist(), strict=True):
            if hr != tz_hour:  # as push: a new UTC hour asks for its offset
                tz_hour, tz_offset = hr, utc_offset_s(t)
            offsets.append(tz_offset)
        self._tz_hour, self._tz_offset = tz_hour, tz_offset
        local = ts + np.repeat(np.array(offsets, np.int64), lengths)
        day = (local + calendar().day_shift_s) // 86400
        first, lengths = self._runs(day)
        sessions, days = [], []
        cur, session = self._day, self._session
        for d, count in zip(day[first].tolist(), lengths.tolist(), strict=True):
            if d != cur:
                cur, session = d, calendar().row(d)
            sessions.append(session)
            days += [cur] * count
        self._day, self._session = cur, session
        return local, days, np.repeat(np.array(sessions, np.int64), lengths, axis=0)

    def extend(
        self, ts_s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
        v: np.ndarray,
    ) -> None:  # fmt: skip
        """Push a chunk of bars (time order); replace the columns with the chunk's.

        The chunk's arrays reuse the previous chunk's memory: `cols` views are
        valid until the next `extend`.
        """
        ts = np.ascontiguousarray(ts_s, np.int64)
        o, h, lo, c, v = (np.ascontiguousarray(a, np.float64) for a in (o, h, lo, c, v))
        m = ts.shape[0]
        if any(a.shape != (m,) for a in (o, h, lo, c, v)):
            raise ValueError("extend needs six 1-D arrays of one length")
        self._n0 = n0 = int(self._ist[0])
        self.m = m
        lists = self.lists = TapeLists()
        if not m:  # the sought bar stays as it was
            self.cols = TapeColumns(self._buf[0][:0], np.zeros(0, np.int64))
            self._sessions = []
            return
        local, lists.trading_day, sess = self._calendar(ts)
        g_open, g_close, r_open, r_close = sess[:, 0], sess[:, 1], sess[:, 2], sess[:, 3]
        minute = (local % 86400) // 60
        rth = (r_open < ts) & (ts <= r_close)
        if self._buf[0].shape[0] < m:  # fresh pages cost more than the kernel
            self._buf = (np.empty((m, _WIDTH)), np.empty((m, 3), np.int64))
        rows, cal = self._buf[0][:m], self._buf[1][:m]
        w = self._wins
        _kernel(o, h, lo, c, v, minute, rth, rth & (ts <= r_open + mf._OPEN_WINDOW_S), rows,
                self._fs, self._ist, self._ring, self._slow, self._absdiff, w[0], w[1], w[2],
                self._qi, self._qv, _FPARAMS, _IPARAMS, _SIN, _COS)  # fmt: skip
        cal[:, 0], cal[:, 1], cal[:, 2] = ts, minute, (local // 86400 + 3) % 7
        self._rows, self._cal = rows, cal
        self.cols = TapeColumns(rows, np.arange(n0 + 1, n0 + m + 1, dtype=np.int64))
        warm = min(max(mf.WARMUP_BARS - 1 - n0, 0), m)
        lists.ready = [False] * warm + [True] * (m - warm)
        lists.in_rth = rth.tolist()
        lists.entries_allowed = (rth & (ts <= r_close - mf._ENTRY_CUTOFF_S)).tolist()
        lists.in_session = ((g_open < ts) & (ts <= g_close)).tolist()
        lists.minutes_to_close = np.where(r_close != 0, (r_close - ts) // 60, -1).tolist()
        self._sessions = list(
            zip(
                ts.tolist(),
                lists.trading_day,
                lists.in_rth,
                lists.entries_allowed,
                lists.in_session,
                lists.minutes_to_close,
                strict=True,
            )
        )
        self.seek(m - 1)

    def seek(self, i: int) -> None:
        """Make the attributes those of a `MarketFeatures` after bar i of the chunk."""
        (self.open, self.high, self.low, self.close, self.volume, self.atr, self.ema_fast,
         self.ema_slow, self.avg_gain, self.avg_loss, self.rsi, self.long_var, self.rv,
         self.bb_mean, self.bb_std, self.volume_z, self.prev_ema_fast, self.prev_ema_slow,
         self.prev_atr, self.prev_bb_mean, self.prev_bb_std, self.prev_rsi, self.prev_high_60,
         self.prev_low_60) = self._rows[i, :_NS].tolist()  # fmt: skip
        self.ts_s, self.minute_et, self.weekday = self._cal[i].tolist()
        self._i = i
        self.n = self._n0 + i + 1
        lists = self.lists
        self.trading_day = lists.trading_day[i]
        self.in_rth = lists.in_rth[i]
        self.entries_allowed = lists.entries_allowed[i]
        self.in_session = lists.in_session[i]
        self.minutes_to_close = lists.minutes_to_close[i]

    def session(self, i: int) -> None:
        """Set only ts_s, the trading day and the session flags of bar i."""
        (
            self.ts_s,
            self.trading_day,
            self.in_rth,
            self.entries_allowed,
            self.in_session,
            self.minutes_to_close,
        ) = self._sessions[i]

    @property
    def ready(self) -> bool:
        """Say whether the warm-up is over (at the sought bar)."""
        return self.n >= mf.WARMUP_BARS

    def close_ago(self, k: int) -> float:
        """Return the close k bars before the sought one (k < AGO)."""
        if not 0 <= k < AGO:
            raise IndexError(f"close_ago({k}): k must be in [0, {AGO})")
        return self._rows.item(self._i, _CA + k)  # type: ignore[no-any-return]

    def slow_ago(self, k: int) -> float:
        """Return EMA21 k bars before the sought one (k < SLOW_AGO)."""
        if not 0 <= k < SLOW_AGO:
            raise IndexError(f"slow_ago({k}): k must be in [0, {SLOW_AGO})")
        return self._rows.item(self._i, _SA + k)  # type: ignore[no-any-return]

    def values(self) -> list[float]:
        """Return the sought bar's features as Python floats (NaN before ready)."""
        return self._rows[self._i, _VA:].tolist()  # type: ignore[no-any-return]

    def vector(self, out: np.ndarray | None = None) -> np.ndarray:
        """Return the sought bar's features as float32 (into `out` if given)."""
        if out is None:
            return np.array(self.values(), dtype=np.float32)
        out[:] = self.values()
        return out


def load_kernel() -> float:
    """Compile the kernel, or load it from numba's cache, now; return the seconds it took."""
    t0 = time.perf_counter()
    TapeFeatures().extend(np.array([60, 120], np.int64), *(np.ones(2) for _ in range(5)))
    return time.perf_counter() - t0
