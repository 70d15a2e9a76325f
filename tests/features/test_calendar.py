"""The exchange calendar: sessions, holidays, early closes and the session flags built on it."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import numpy as np
import pandas_market_calendars as mcal
import pytest

from features.batch import batch_features
from features.calendar import EASTERN, ENTRY_CUTOFF_MIN, OPEN_WINDOW_MIN, calendar, describe
from features.compute import WARMUP_BARS, MarketFeatures, et_clock
from infra.contracts import FEATURE_NAMES

IDX = {n: i for i, n in enumerate(FEATURE_NAMES)}


def _et(day: date, hh: int, mm: int) -> int:
    return int(datetime.combine(day, time(hh, mm), tzinfo=EASTERN).timestamp())


def _minute_bars(t0: int, t1: int) -> np.ndarray:
    """Return every minute close in (t0, t1]."""
    return np.arange(t0 + 60, t1 + 1, 60, dtype=np.int64)


def _flags(ts: np.ndarray) -> list[tuple[bool, bool, int, bool, float, float]]:
    """Feed flat bars through MarketFeatures; return its session state per bar."""
    mf = MarketFeatures("ES")
    out = []
    for t in ts.tolist():
        mf.push(t, 5000.0, 5000.5, 4999.5, 5000.0, 100.0)
        vec = mf.values() if mf.ready else [np.nan] * len(FEATURE_NAMES)
        out.append(
            (
                mf.in_session,
                mf.in_rth,
                mf.minutes_to_close,
                mf.entries_allowed,
                vec[IDX["session_rth"]],
                vec[IDX["session_open_30"]],
            )
        )
    return out


def test_sessions_come_from_the_library_christmas_and_thanksgiving_2024() -> None:
    cal = calendar()
    normal = cal.session(date(2024, 12, 23))
    assert (normal.rth_open_s, normal.rth_close_s) == (
        _et(date(2024, 12, 23), 9, 30),
        _et(date(2024, 12, 23), 16, 0),
    )
    assert normal.globex_open_s == _et(date(2024, 12, 22), 18, 0)
    assert normal.globex_close_s == _et(date(2024, 12, 23), 17, 0)
    assert not normal.early_close and not normal.holiday
    eve = cal.session(date(2024, 12, 24))  # cash closes 13:00 ET, Globex halts 13:15 ET
    assert eve.early_close and not eve.holiday
    assert eve.rth_close_s == _et(date(2024, 12, 24), 13, 0)
    assert eve.globex_close_s == _et(date(2024, 12, 24), 13, 15)
    xmas = cal.session(date(2024, 12, 25))
    assert xmas.holiday and not xmas.is_open and not xmas.has_rth
    after = cal.session(date(2024, 12, 26))  # reopens on the evening of the 25th
    assert after.globex_open_s == _et(date(2024, 12, 25), 18, 0) and after.has_rth
    thanksgiving = cal.session(date(2024, 11, 28))  # Globex until 13:00 ET, no RTH
    assert thanksgiving.is_open and thanksgiving.holiday and not thanksgiving.has_rth
    assert thanksgiving.globex_close_s == _et(date(2024, 11, 28), 13, 0)
    black_friday = cal.session(date(2024, 11, 29))
    assert black_friday.early_close and black_friday.rth_close_s == _et(date(2024, 11, 29), 13, 0)
    weekend = cal.session(date(2024, 12, 28))
    assert not weekend.is_open and not weekend.holiday
    assert [s.day for s in cal.sessions(date(2024, 12, 23), date(2024, 12, 29))] == [
        date(2024, 12, 23),
        date(2024, 12, 24),
        date(2024, 12, 26),
        date(2024, 12, 27),
    ]
    assert describe(date(2024, 12, 25)) == "2024-12-25: closed"
    assert "early close" in describe(date(2024, 12, 24))


def test_the_table_agrees_with_the_library_over_a_year() -> None:
    """Every day of 2023: RTH equals the NYSE session cut at the CME Globex close."""
    globex = mcal.get_calendar("CME Globex Equity").schedule("2023-01-01", "2023-12-31")
    cash = mcal.get_calendar("NYSE").schedule("2023-01-01", "2023-12-31")
    cal = calendar()
    checked = 0
    for day, row in globex.iterrows():
        s = cal.session(day.date())
        assert s.globex_open_s == int(row["market_open"].timestamp())
        assert s.globex_close_s == int(row["market_close"].timestamp())
        if day in cash.index:
            c = cash.loc[day]
            assert s.rth_open_s == int(c["market_open"].timestamp())
            assert s.rth_close_s == min(
                int(c["market_close"].timestamp()), int(row["market_close"].timestamp())
            )
            checked += 1
        else:
            assert not s.has_rth and s.holiday
    assert checked == len(cash) == 250


@pytest.mark.parametrize(
    ("day", "offset_h"),
    [(date(2024, 3, 11), 4), (date(2024, 11, 4), 5)],  # the Mondays after the DST changes
)
def test_session_flags_match_the_calendar_on_dst_change_days(day: date, offset_h: int) -> None:
    cal = calendar()
    s = cal.session(day)
    # the Globex open on the Sunday of the change is 18:00 local, in the new offset
    assert s.globex_open_s == int(
        datetime(day.year, day.month, day.day - 1, 18 + offset_h, 0, tzinfo=UTC).timestamp()
    )
    assert s.rth_open_s == int(
        datetime(day.year, day.month, day.day, 9 + offset_h, 30, tzinfo=UTC).timestamp()
    )
    # bars through the whole Globex session, plus the hour before and after it
    ts = _minute_bars(s.globex_open_s - 3600, s.globex_close_s + 3600)
    flags = _flags(ts)
    in_rth = (ts > s.rth_open_s) & (ts <= s.rth_close_s)
    assert in_rth.sum() == 390
    assert [f[1] for f in flags] == in_rth.tolist()
    assert [f[0] for f in flags] == ((ts > s.globex_open_s) & (ts <= s.globex_close_s)).tolist()
    opening = in_rth & (ts <= s.rth_open_s + OPEN_WINDOW_MIN * 60)
    assert opening.sum() == OPEN_WINDOW_MIN
    ready = np.arange(len(ts)) >= WARMUP_BARS - 1
    assert [f[4] for f in flags[WARMUP_BARS - 1 :]] == in_rth[ready].astype(float).tolist()
    assert [f[5] for f in flags[WARMUP_BARS - 1 :]] == opening[ready].astype(float).tolist()
    # the batch twin says the same
    flat = np.full(len(ts), 5000.0)
    batch = batch_features(ts, flat, flat, flat, flat, np.full(len(ts), 1.0))
    assert batch[ready, IDX["session_rth"]].tolist() == in_rth[ready].astype(float).tolist()
    assert batch[ready, IDX["session_open_30"]].tolist() == opening[ready].astype(float).tolist()
    # an evening bar belongs to the next day's session: the trading day number says so
    assert cal.trading_day_number(s.globex_open_s + 60) == (day - date(1970, 1, 1)).days
    assert et_clock(s.globex_open_s + 60)[2] == (day - date(1970, 1, 1)).days


def test_early_close_minutes_to_close_and_entry_cutoff() -> None:
    day = date(2024, 12, 24)
    s = calendar().session(day)
    ts = _minute_bars(_et(day, 12, 0), s.globex_close_s)
    by_time = {t: f for t, f in zip(ts.tolist(), _flags(ts), strict=True)}
    last_entry = _et(day, 13, 0) - ENTRY_CUTOFF_MIN * 60
    assert by_time[last_entry][2:4] == (ENTRY_CUTOFF_MIN, True)
    assert by_time[last_entry + 60][2:4] == (ENTRY_CUTOFF_MIN - 1, False)
    close_bar = by_time[_et(day, 13, 0)]
    assert close_bar[:4] == (True, True, 0, False)  # the bar the paper venue flattens on
    after = by_time[_et(day, 13, 1)]
    assert after[:2] == (True, False) and after[2] < 0  # Globex trades until 13:15 ET
    assert by_time[s.globex_close_s][0] and not by_time[s.globex_close_s][3]


def test_holiday_bars_have_no_session_and_allow_no_entries() -> None:
    """Bars a feed invents on 2024-12-25 (closed) and 2024-11-28 (no RTH) never open trades."""
    for day in (date(2024, 12, 25), date(2024, 11, 28)):
        ts = _minute_bars(_et(day, 8, 0), _et(day, 17, 0))
        flags = _flags(ts)
        assert not any(f[1] or f[3] for f in flags)
        assert all(f[2] == -1 for f in flags)
        assert all(f[4] == 0.0 for f in flags[WARMUP_BARS - 1 :])
    closed = _flags(_minute_bars(_et(date(2024, 12, 25), 8, 0), _et(date(2024, 12, 25), 17, 0)))
    assert not any(f[0] for f in closed)


def test_incremental_equals_batch_through_holidays_and_early_closes() -> None:
    ts = _minute_bars(_et(date(2024, 11, 26), 0, 0), _et(date(2024, 12, 2), 12, 0))
    rng = np.random.default_rng(5)
    close = 5000.0 + np.cumsum(rng.normal(0, 1, len(ts)))
    high, low = close + 0.5, close - 0.5
    vol = rng.integers(1, 500, len(ts)).astype(float)
    mf = MarketFeatures("ES")
    rows = []
    for t, c, h, lo, v in zip(ts.tolist(), close, high, low, vol, strict=True):
        mf.push(t, c, h, lo, c, v)
        rows.append(mf.values() if mf.ready else [np.nan] * len(FEATURE_NAMES))
    incremental = np.array(rows, dtype=np.float32)
    batch = batch_features(ts, close, high, low, close, vol)
    for name in ("session_rth", "session_open_30", "tod_sin", "tod_cos"):
        j = IDX[name]
        np.testing.assert_array_equal(incremental[WARMUP_BARS:, j], batch[WARMUP_BARS:, j])
    rth = batch[WARMUP_BARS:, IDX["session_rth"]]
    assert 0 < rth.sum() < len(rth)


def test_rows_are_built_a_decade_at_a_time_and_join_at_the_boundary() -> None:
    cal = calendar()
    eve, new_year, after = (
        cal.session(date(2029, 12, 31)),
        cal.session(date(2030, 1, 1)),
        cal.session(date(2030, 1, 2)),
    )
    assert 2020 in cal._blocks and 2030 in cal._blocks
    assert eve.has_rth and new_year.holiday and not new_year.has_rth and after.has_rth
    # the session of 2030-01-02 opens on the evening of the holiday, in the 2030 block
    assert after.globex_open_s == _et(date(2030, 1, 1), 18, 0)
