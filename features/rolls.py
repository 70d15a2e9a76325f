"""Quarterly contract rolls of CME equity index futures, and back-adjusted continuous series.

Rules:

- Cycle: March, June, September, December (month codes H, M, U, Z) for the roots in
  `QUARTERLY_ROOTS`; other symbols have no known cycle and get the contract "".
- Expiry: the third Friday of the contract month; when the exchange calendar gives
  that day no regular session (2026-06-19, Juneteenth), the last earlier day with one.
- Roll: the front contract changes to the next one on the trading day
  `ROLL_DAYS_BEFORE_EXPIRY` calendar days before expiry (setting of the same name,
  default 8: the Thursday of the week before a Friday expiry, the CME equity roll
  date). A timestamp belongs to the trading day of its Globex session
  (`features.calendar`), so the switch happens at that day's Globex open, the
  evening before (Wednesday 18:00 ET).
- Codes: root + month code + the last digit of the year, `ESZ4` for ES December
  2024, as CME Globex, Databento raw symbols and most brokers spell them.

Back adjustment (`back_adjust`), the difference method: at each roll the earlier
contract's bars are shifted by the price gap between the new contract's first open
and the old contract's last close, so a continuous series has no jump at the roll
(the one-bar move from that close to that open is kept in the gap); the last
contract's prices are unchanged. Differences, not ratios: point distances (stops,
ATR, P&L in points) stay what they were; older prices can drift far from what was
traded (even below zero over decades), so percentage returns far back are only
approximate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from features.calendar import calendar
from infra.settings.trader import TraderSettings

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MONTH_CODES",
    "QUARTERLY_ROOTS",
    "ROLL_DAYS_BEFORE_EXPIRY",
    "BackAdjustError",
    "Roll",
    "back_adjust",
    "contract_code",
    "expiry",
    "front_contract",
    "front_month",
    "roll_date",
    "roll_schedule",
]

#: CME equity index futures listed on the quarterly H/M/U/Z cycle.
QUARTERLY_ROOTS = frozenset({"ES", "NQ", "MES", "MNQ", "YM", "MYM", "RTY", "M2K", "EMD"})
MONTH_CODES = {3: "H", 6: "M", 9: "U", 12: "Z"}
#: The default of the `ROLL_DAYS_BEFORE_EXPIRY` setting.
ROLL_DAYS_BEFORE_EXPIRY: int = TraderSettings.model_fields["roll_days_before_expiry"].default
_EPOCH = date(1970, 1, 1)
_FRIDAY = 4


class BackAdjustError(ValueError):
    """Raise when bars cannot form a continuous series (missing or revisited contracts)."""


@dataclass(frozen=True, slots=True)
class Roll:
    """The front contract changes from `old` to `new` on trading day `day`."""

    day: date
    old: str
    new: str
    expiry: date


def _third_friday(year: int, month: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(_FRIDAY - first.weekday()) % 7 + 14)


def expiry(year: int, month: int) -> date:
    """Return the expiry day of a quarterly contract (third Friday, or the day before it trades)."""
    day = _third_friday(year, month)
    cal = calendar()
    for _ in range(7):
        if cal.is_rth_day(day):
            return day
        day -= timedelta(days=1)
    raise ValueError(f"no regular session in the week before {year}-{month:02d}'s third Friday")


def roll_date(year: int, month: int, roll_days: int = ROLL_DAYS_BEFORE_EXPIRY) -> date:
    """Return the first trading day on which the contract after (year, month) is the front."""
    return expiry(year, month) - timedelta(days=roll_days)


@lru_cache(maxsize=4096)
def _front_of_day(day_number: int, roll_days: int) -> tuple[int, int]:
    day = _EPOCH + timedelta(days=day_number)
    year, month = day.year, day.month
    quarter = ((month - 1) // 3 + 1) * 3  # the contract month of this quarter
    if day >= roll_date(year, quarter, roll_days):
        quarter += 3
        if quarter > 12:
            year, quarter = year + 1, 3
    return year, quarter


def front_month(day: date, roll_days: int = ROLL_DAYS_BEFORE_EXPIRY) -> tuple[int, int]:
    """Return (year, month) of the front quarterly contract on a trading day."""
    if roll_days < 0:
        raise ValueError(f"roll_days must be >= 0, got {roll_days}")
    return _front_of_day((day - _EPOCH).days, roll_days)


def contract_code(symbol: str, year: int, month: int) -> str:
    """Return the contract code, e.g. `ESZ4` for ES December 2024."""
    code = MONTH_CODES.get(month)
    if code is None:
        raise ValueError(f"{month} is not a quarterly contract month (3, 6, 9, 12)")
    return f"{symbol}{code}{year % 10}"


def front_contract(symbol: str, ts_s: int, roll_days: int = ROLL_DAYS_BEFORE_EXPIRY) -> str:
    """Return the front contract of a symbol at a UTC epoch second ("" without a known cycle)."""
    if symbol not in QUARTERLY_ROOTS:
        return ""
    if roll_days < 0:
        raise ValueError(f"roll_days must be >= 0, got {roll_days}")
    year, month = _front_of_day(calendar().trading_day_number(ts_s), roll_days)
    return contract_code(symbol, year, month)


def roll_schedule(
    symbol: str, start: date, end: date, roll_days: int = ROLL_DAYS_BEFORE_EXPIRY
) -> list[Roll]:
    """Return the rolls of a symbol whose roll day lies in [start, end]."""
    out = []
    for year in range(start.year, end.year + 2):
        for month in MONTH_CODES:
            day = roll_date(year, month, roll_days)
            if start <= day <= end:
                nxt_year, nxt_month = (year + 1, 3) if month == 12 else (year, month + 3)
                out.append(
                    Roll(
                        day,
                        contract_code(symbol, year, month),
                        contract_code(symbol, nxt_year, nxt_month),
                        expiry(year, month),
                    )
                )
    return out


def back_adjust(
    bars: pd.DataFrame,
    *,
    time_column: str = "ts_event",
    price_columns: tuple[str, ...] = ("open", "high", "low", "close"),
) -> pd.DataFrame:
    """Return a back-adjusted continuous series of bars that carry a `contract` column.

    Each symbol (a `symbol` column, if any) is adjusted on its own, in time order:
    at each change of contract the earlier bars are shifted by (first open of the new
    contract - last close of the old one). The result is sorted by symbol and time
    and has an `adjustment` column (points added to the prices).
    """
    import pandas as pd

    missing = [c for c in ("contract", time_column, *price_columns) if c not in bars.columns]
    if missing:
        raise BackAdjustError(f"bars have no column(s) {missing}")
    keys = ["symbol", time_column] if "symbol" in bars.columns else [time_column]
    frame = bars.sort_values(keys, kind="stable").reset_index(drop=True)
    if frame.duplicated(keys).any():
        dup = frame.loc[frame.duplicated(keys), keys].iloc[0].tolist()
        raise BackAdjustError(f"more than one bar at {dup}: keep the front contract's bar only")
    blank = frame["contract"].isna() | (frame["contract"].astype(str) == "")
    if blank.any():
        raise BackAdjustError(
            f"{int(blank.sum())} bar(s) without a contract (first at row {int(blank.idxmax())})"
        )
    adjustment = np.zeros(len(frame))
    groups = (
        frame.groupby("symbol", sort=False).indices
        if "symbol" in frame.columns
        else {"": np.arange(len(frame))}
    )
    opens = frame["open"].to_numpy(dtype=np.float64)
    closes = frame["close"].to_numpy(dtype=np.float64)
    contracts = frame["contract"].astype(str).to_numpy()
    for symbol, rows in groups.items():
        rows = np.asarray(rows)
        c = contracts[rows]
        change = np.flatnonzero(c[1:] != c[:-1]) + 1
        seen = {c[0]}
        for i in change:
            if c[i] in seen:
                raise BackAdjustError(
                    f"{symbol or 'bars'}: contract {c[i]} comes back at "
                    f"{frame[time_column].iloc[rows[i]]} after {c[i - 1]}"
                )
            seen.add(c[i])
        gaps = np.zeros(len(rows))
        gaps[change] = opens[rows[change]] - closes[rows[change - 1]]
        adjustment[rows] = gaps.sum() - np.cumsum(gaps)
    out = frame.copy()
    for col in price_columns:
        out[col] = frame[col].to_numpy(dtype=np.float64) + adjustment
    out["adjustment"] = adjustment
    return pd.DataFrame(out)
