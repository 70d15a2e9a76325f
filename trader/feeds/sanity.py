"""Refuse data that does not fit the instrument or the strategies, before any trade.

Two checks, each with a message that says what to do:
- price scale against tick size: when a typical bar moves less than one tick, the
  prices are not the instrument's (EURUSD run as ES, or prices in the wrong unit);
  every stop would sit inside one tick and every trade would lose.
- bar interval against the strategies' intraday design: the features and the four
  strategies are built on 1-minute bars within the CME regular session; hourly or
  daily bars leave them nothing (or almost nothing) to trade on.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from trader.core.instruments import Instrument
from trader.feeds.base import FeedDataError

__all__ = [
    "DESIGN_INTERVAL_S",
    "MAX_INTERVAL_S",
    "RANGE_QUANTILE",
    "DataMismatchError",
    "check_fit",
]

#: The bar length the features and strategies are designed for.
DESIGN_INTERVAL_S = 60
#: Longer bars than this are refused (hourly and daily bars).
MAX_INTERVAL_S = 15 * 60
#: The quantile of bar ranges ("a typical bar") compared with one tick.
RANGE_QUANTILE = 0.75


class DataMismatchError(FeedDataError):
    """Raise when well-formed data does not fit the instrument or the strategies."""


def check_fit(frame: pd.DataFrame, instruments: Mapping[str, Instrument], where: str) -> list[str]:
    """Raise `DataMismatchError` on data that cannot be traded; return warnings otherwise."""
    warnings: list[str] = []
    if frame.empty:
        return warnings
    interval_s = int(frame["interval_s"].iloc[0])
    if interval_s > MAX_INTERVAL_S:
        raise DataMismatchError(
            where,
            None,
            f"bars are {_length(interval_s)} long, but the strategies trade intraday on "
            f"{_length(DESIGN_INTERVAL_S)} bars within the regular session: "
            f"{_length(interval_s)} bars give them no in-session bars to trade. "
            "Use 1-minute bars (resample trades or finer bars to 1 minute).",
        )
    if interval_s != DESIGN_INTERVAL_S:
        warnings.append(
            f"{where}: bars are {_length(interval_s)} long; the features' windows are counted in "
            f"bars and were designed for {_length(DESIGN_INTERVAL_S)} bars"
        )
    ranges = (frame["high"] - frame["low"]).to_numpy(dtype=np.float64)
    symbols = frame["symbol"].to_numpy()
    for symbol in pd.unique(symbols):
        inst = instruments.get(str(symbol))
        if inst is None:
            continue
        typical = float(np.quantile(ranges[symbols == symbol], RANGE_QUANTILE))
        if typical < inst.tick_size:
            price = float(frame.loc[frame["symbol"] == symbol, "close"].median())
            raise DataMismatchError(
                where,
                None,
                f"{symbol}: a typical bar ranges {typical:.6g} (the {RANGE_QUANTILE:.0%} quantile of "
                f"high - low), less than one {symbol} tick ({inst.tick_size:g}); prices near "
                f"{price:.6g} do not look like {symbol}. Check the symbol (--symbol), the file's "
                "price unit, or define the instrument in INSTRUMENTS_JSON with its real tick size.",
            )
    return warnings


def _length(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}" if n == 1 else f"{n} {unit}s"
    return f"{seconds} s"
