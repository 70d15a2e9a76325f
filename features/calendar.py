"""The exchange calendar of CME equity index futures: sessions, holidays, early closes.

Everything comes from pandas-market-calendars; no trading hour is written here.

- The Globex session of a trading day D comes from the "CME Globex Equity"
  calendar: it opens the evening before (17:00 CT = 18:00 ET) and closes at 16:00 CT
  (17:00 ET), earlier on early-close days (13:15 ET on 2024-12-24 and the day after
  Thanksgiving, 13:00 ET on Thanksgiving and other US holidays); a day without a
  Globex session (2024-12-25) is closed.
- Regular trading hours (RTH) are the hours of the cash index the futures track, from
  the "NYSE" calendar (09:30-16:00 ET, 13:00 ET on early closes), cut at the Globex
  close if that comes first. A weekday without both sessions has no RTH: a holiday
  (Thanksgiving trades on Globex until 13:00 ET but has no RTH).
- A timestamp belongs to the trading day whose Globex session it falls in: the
  day starts at the Globex open the evening before (`trading_day_number`).

Per-day rows are computed once, a decade at a time, and then looked up from a dict
keyed by the trading day number (days since 1970-01-01), so the per-bar cost is a
dict lookup when the day changes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

__all__ = [
    "CASH_CALENDAR",
    "CLOSED",
    "EASTERN",
    "ENTRY_CUTOFF_MIN",
    "GLOBEX_CALENDAR",
    "OPEN_WINDOW_MIN",
    "SessionCalendar",
    "SessionDay",
    "calendar",
    "describe",
    "utc_offset_s",
]

EASTERN = ZoneInfo("America/New_York")
#: The futures' own sessions (holidays, early closes, the evening open).
GLOBEX_CALENDAR = "CME Globex Equity"
#: The regular trading hours of the cash index.
CASH_CALENDAR = "NYSE"
#: No entries in the last minutes before the (possibly early) regular close.
ENTRY_CUTOFF_MIN = 5
#: `session_open_30`: the first minutes of the regular session.
OPEN_WINDOW_MIN = 30

EARLY_CLOSE, HOLIDAY = 1, 2
#: The row of a day without a session: (globex open, globex close, rth open, rth close, flags).
CLOSED: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
_BLOCK_YEARS = 10
_DAY_S = 86400


def utc_offset_s(ts_s: int) -> int:
    """Return the US/Eastern UTC offset in seconds at an epoch second."""
    return int(datetime.fromtimestamp(ts_s, EASTERN).utcoffset().total_seconds())  # type: ignore[union-attr]


@dataclass(frozen=True, slots=True)
class SessionDay:
    """One trading day's sessions in UTC epoch seconds (0 when there is none)."""

    day: date
    globex_open_s: int
    globex_close_s: int
    rth_open_s: int
    rth_close_s: int
    early_close: bool
    holiday: bool

    @property
    def is_open(self) -> bool:
        """Say whether Globex trades on this day at all."""
        return self.globex_close_s > 0

    @property
    def has_rth(self) -> bool:
        """Say whether the day has regular trading hours."""
        return self.rth_close_s > 0


def _epoch_s(ts: Any) -> int:
    return int(ts.timestamp())


class SessionCalendar:
    """Per-trading-day session rows of the CME equity futures, built lazily by decade."""

    def __init__(self, globex: str = GLOBEX_CALENDAR, cash: str = CASH_CALENDAR) -> None:
        import pandas_market_calendars as mcal  # imported on first use: ~0.7 s

        self._globex = mcal.get_calendar(globex)
        self._cash = mcal.get_calendar(cash)
        self._rows: dict[int, tuple[int, int, int, int, int]] = {}
        self._blocks: set[int] = set()
        self._lock = threading.Lock()
        self.day_shift_s = self._globex_day_shift_s()
        this_year = datetime.now(UTC).year
        self._load(this_year - this_year % _BLOCK_YEARS)  # live trading never waits on a bar

    def _globex_day_shift_s(self) -> int:
        """Return how long before ET midnight the trading day starts (the Globex open)."""
        _since, open_time, days = self._globex.regular_market_times["market_open"][-1]
        tz = ZoneInfo(str(self._globex.tz))
        sample = date(2024, 1, 2)
        local = datetime.combine(sample + timedelta(days=days), open_time, tzinfo=tz)
        et = local.astimezone(EASTERN)
        midnight = datetime.combine(sample, datetime.min.time(), tzinfo=EASTERN)
        return int((midnight - et).total_seconds())

    def trading_day_number(self, ts_s: int) -> int:
        """Return the trading day (days since 1970-01-01) a UTC epoch second belongs to."""
        return (ts_s + utc_offset_s(ts_s) + self.day_shift_s) // _DAY_S

    def row(self, day_number: int) -> tuple[int, int, int, int, int]:
        """Return (globex open, globex close, rth open, rth close, flags) of a trading day."""
        found = self._rows.get(day_number)
        if found is not None:
            return found
        year = (date(1970, 1, 1) + timedelta(days=day_number)).year
        self._load(year - year % _BLOCK_YEARS)
        return self._rows.get(day_number, CLOSED)

    def session(self, day: date) -> SessionDay:
        """Return the sessions of a trading day."""
        go, gc, ro, rc, flags = self.row((day - date(1970, 1, 1)).days)
        return SessionDay(
            day,
            go,
            gc,
            ro,
            rc,
            early_close=bool(flags & EARLY_CLOSE),
            holiday=bool(flags & HOLIDAY),
        )

    def session_at(self, ts_s: int) -> SessionDay:
        """Return the sessions of the trading day a UTC epoch second belongs to."""
        return self.session(date(1970, 1, 1) + timedelta(days=self.trading_day_number(ts_s)))

    def _load(self, first_year: int) -> None:
        with self._lock:
            if first_year in self._blocks:
                return
            start, end = date(first_year, 1, 1), date(first_year + _BLOCK_YEARS - 1, 12, 31)
            self._rows.update(self._build(start, end))
            self._blocks.add(first_year)

    def _build(self, start: date, end: date) -> dict[int, tuple[int, int, int, int, int]]:
        globex = self._globex.schedule(start, end)
        cash = self._cash.schedule(start, end)
        early = {d.date() for d in self._globex.early_closes(globex).index}
        early |= {d.date() for d in self._cash.early_closes(cash).index}
        cash_by_day = {
            d.date(): (_epoch_s(o), _epoch_s(c))
            for d, o, c in zip(cash.index, cash["market_open"], cash["market_close"], strict=True)
        }
        epoch = date(1970, 1, 1)
        rows: dict[int, tuple[int, int, int, int, int]] = {}
        for d, o, c in zip(
            globex.index, globex["market_open"], globex["market_close"], strict=True
        ):
            day = d.date()
            go, gc = _epoch_s(o), _epoch_s(c)
            ro, rc = cash_by_day.get(day, (0, 0))
            rc = min(rc, gc)
            if rc <= ro:
                ro = rc = 0
            flags = 0
            if rc and day in early:
                flags |= EARLY_CLOSE
            if not rc and day.weekday() < 5:
                flags |= HOLIDAY
            rows[(day - epoch).days] = (go, gc, ro, rc, flags)
        day = start
        while day <= end:  # weekdays without a Globex session are holidays too
            key = (day - epoch).days
            if key not in rows and day.weekday() < 5:
                rows[key] = (0, 0, 0, 0, HOLIDAY)
            day += timedelta(days=1)
        return rows

    def sessions(self, start: date, end: date) -> list[SessionDay]:
        """Return the trading days in [start, end] on which Globex trades."""
        out = []
        day = start
        while day <= end:
            s = self.session(day)
            if s.is_open:
                out.append(s)
            day += timedelta(days=1)
        return out

    def is_rth_day(self, day: date) -> bool:
        """Say whether a day has regular trading hours."""
        return self.row((day - date(1970, 1, 1)).days)[3] > 0


@cache
def calendar() -> SessionCalendar:
    """Return the process-wide CME equity futures calendar."""
    return SessionCalendar()


def describe(day: date) -> str:
    """Return a one-line human description of a trading day (for logs and the CLI)."""
    s = calendar().session(day)
    if not s.is_open:
        return f"{day}: closed"

    def et(ts_s: int) -> str:
        return datetime.fromtimestamp(ts_s, UTC).astimezone(EASTERN).strftime("%m-%d %H:%M")

    rth = f"RTH {et(s.rth_open_s)}-{et(s.rth_close_s)} ET" if s.has_rth else "no RTH (holiday)"
    tag = " early close" if s.early_close else ""
    return f"{day}: Globex {et(s.globex_open_s)}-{et(s.globex_close_s)} ET, {rth}{tag}"
