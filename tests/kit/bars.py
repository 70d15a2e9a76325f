"""Bars as the csv files `tradeloop trade --feed csv:PATH` reads."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from trader.core.bar import MarketBar

__all__ = ["write_bars_csv"]


def write_bars_csv(path: Path, bars: Iterable[MarketBar]) -> Path:
    """Write bars (ts, open, high, low, close, volume, symbol) to `path`; return it."""
    rows = [
        {"ts": pd.Timestamp(b.ts_s, unit="s", tz="UTC"), "open": b.open, "high": b.high,
         "low": b.low, "close": b.close, "volume": b.volume, "symbol": b.symbol}
        for b in bars
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
