"""Historical bars from CSV, parquet or Databento DBN files in the common OHLCV layout.

Columns: a timestamp (`timestamp`, `ts`, `ts_event`, `time`, `datetime` or `date`:
ISO text or epoch s/ms/us/ns), `open`, `high`, `low`, `close`, `volume`, and
`symbol` (or pass `symbol=`). Timestamps without a zone are taken in `tz`
(default UTC). `bar_ts="open"` says the timestamps mark the bar's start.

Every row is checked (missing columns, NaN, non-positive prices, negative volume,
high < low, open/close outside [low, high], unparseable, out-of-order or
duplicated timestamps per symbol). A bad row raises `FeedDataError` naming the
file and the data row (1-based; the CSV line is row + 1), or, with
`skip_bad=True`, is skipped and counted by reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from trader.core.bar import MarketBar
from trader.feeds.base import Feed, FeedDataError
from trader.feeds.dbn import is_dbn, read_dbn

__all__ = ["FileFeed", "load_bars"]

TS_ALIASES = ("timestamp", "ts", "ts_event", "time", "datetime", "date")
PRICE_COLUMNS = ("open", "high", "low", "close")


def _read(path: Path, fmt: str | None = None) -> pd.DataFrame:
    if not path.exists():
        raise FeedDataError(str(path), None, "file does not exist")
    if fmt is None:
        fmt = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
    if fmt == "dbn" or is_dbn(path):
        return read_dbn(path)
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise FeedDataError(str(path), None, f"cannot read: {exc}") from None


def _timestamps(raw: pd.Series, tz: str) -> np.ndarray:
    """Return epoch seconds (float, NaN where unparseable)."""
    if pd.api.types.is_numeric_dtype(raw):
        values = raw.to_numpy(dtype=np.float64)
        finite = np.abs(values[np.isfinite(values)])
        scale = 1.0
        if finite.size:
            top = float(np.median(finite))
            scale = 1.0 if top < 1e11 else 1e3 if top < 1e14 else 1e6 if top < 1e17 else 1e9
        return values / scale
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = raw
    else:
        parsed = pd.to_datetime(raw, errors="coerce", utc=False, format="mixed")
    if getattr(parsed.dt, "tz", None) is None:
        parsed = parsed.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    parsed = parsed.dt.tz_convert("UTC")
    ns = parsed.astype("int64").to_numpy().astype(np.float64)
    ns[parsed.isna().to_numpy()] = np.nan
    return ns / 1e9


def load_bars(
    path: str | Path,
    *,
    symbol: str | None = None,
    symbols: tuple[str, ...] | None = None,
    tz: str = "UTC",
    bar_ts: Literal["close", "open"] = "close",
    interval_s: int | None = None,
    skip_bad: bool = False,
    skipped: dict[str, int] | None = None,
    fmt: str | None = None,
) -> pd.DataFrame:
    """Load, check and sort bars; return columns symbol, ts_s, open..volume, interval_s."""
    path = Path(path)
    where = str(path)
    df = _read(path, fmt)
    if "interval_s" in df.attrs:  # DBN: bars stamped at their open, length from the schema
        bar_ts, interval_s = "open", int(df.attrs["interval_s"])
    df.columns = [str(c).strip().lower() for c in df.columns]
    ts_col = next((c for c in TS_ALIASES if c in df.columns), None)
    missing = [c for c in (*PRICE_COLUMNS, "volume") if c not in df.columns]
    if ts_col is None:
        missing.insert(0, "timestamp")
    if missing:
        raise FeedDataError(where, None, f"missing column(s) {', '.join(missing)}")
    if "symbol" in df.columns:
        sym = df["symbol"].astype(str).str.strip().str.upper().to_numpy()
    elif symbol:
        sym = np.full(len(df), symbol.upper(), dtype=object)
    else:
        raise FeedDataError(where, None, "no symbol column: pass the symbol (--symbol)")
    n = len(df)
    ts = _timestamps(df[ts_col], tz)
    prices = {}
    for col in (*PRICE_COLUMNS, "volume"):
        prices[col] = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
    o, h, lo, c, v = (prices[k] for k in (*PRICE_COLUMNS, "volume"))
    reasons = np.full(n, "", dtype=object)

    def flag(mask: np.ndarray, reason: str) -> None:
        hit = mask & (reasons == "")
        reasons[hit] = reason

    flag(~np.isfinite(ts), f"unparseable timestamp in column '{ts_col}'")
    for col in (*PRICE_COLUMNS, "volume"):
        flag(~np.isfinite(prices[col]), f"{col} is missing or NaN")
    for col in PRICE_COLUMNS:
        flag(prices[col] <= 0, f"{col} is not positive")
    flag(v < 0, "volume is negative")
    flag(h < lo, "high < low")
    flag((o < lo) | (o > h), "open outside [low, high]")
    flag((c < lo) | (c > h), "close outside [low, high]")
    # per-symbol order: each row must be later than every earlier good row
    order_ok = reasons == ""
    for s in pd.unique(sym):
        idx = np.flatnonzero((sym == s) & order_ok)
        if idx.size < 2:
            continue
        t = ts[idx]
        running = np.maximum.accumulate(t)
        prev_max = np.concatenate(([-np.inf], running[:-1]))
        dup = t == prev_max
        back = t < prev_max
        reasons[idx[dup]] = "duplicated timestamp"
        reasons[idx[back]] = "timestamp out of order"
    bad = np.flatnonzero(reasons != "")
    if bad.size:
        if not skip_bad:
            first = int(bad[0])
            raise FeedDataError(where, first + 1, str(reasons[first]))
        if skipped is not None:
            for reason, count in zip(
                *np.unique(reasons[bad].astype(str), return_counts=True), strict=True
            ):
                skipped[str(reason)] = skipped.get(str(reason), 0) + int(count)
    keep = reasons == ""
    if symbols:
        keep &= np.isin(sym, list(symbols))
    out = pd.DataFrame(
        {
            "symbol": sym[keep].astype(str),
            "ts_s": np.round(ts[keep]).astype(np.int64),
            "open": o[keep],
            "high": h[keep],
            "low": lo[keep],
            "close": c[keep],
            "volume": v[keep],
        }
    )
    if "contract" in df.columns:
        out["contract"] = df["contract"].astype(str).to_numpy()[keep]
    if interval_s is None:
        interval_s = 60
        for s in pd.unique(out["symbol"]):
            steps = np.diff(out.loc[out["symbol"] == s, "ts_s"].to_numpy())
            if steps.size:
                interval_s = int(np.median(steps))
                break
    out["interval_s"] = max(1, int(interval_s))
    if bar_ts == "open":
        out["ts_s"] += out["interval_s"]
    return out.sort_values(["ts_s"], kind="stable").reset_index(drop=True)


class FileFeed(Feed):
    """Bars from a CSV or parquet file (loaded and checked up front)."""

    source = "vendor"

    def __init__(
        self,
        path: str | Path,
        *,
        symbol: str | None = None,
        symbols: tuple[str, ...] | None = None,
        tz: str = "UTC",
        bar_ts: Literal["close", "open"] = "close",
        skip_bad: bool = False,
        fmt: str | None = None,
    ) -> None:
        super().__init__(f"file:{path}")
        skipped: dict[str, int] = {}
        self.frame = load_bars(
            path,
            symbol=symbol,
            symbols=symbols,
            tz=tz,
            bar_ts=bar_ts,
            skip_bad=skip_bad,
            skipped=skipped,
            fmt=fmt,
        )
        for reason, count in skipped.items():
            self.stats.skip(reason, count)
        #: What `trader.feeds.sanity.check_fit` found worth saying (set by `open_feed`).
        self.warnings: list[str] = []
        self.symbols = tuple(pd.unique(self.frame["symbol"]))

    def __len__(self) -> int:
        return len(self.frame)

    def __iter__(self) -> Iterator[MarketBar]:
        f = self.frame
        columns = (
            f["symbol"].tolist(),
            f["ts_s"].tolist(),
            f["open"].tolist(),
            f["high"].tolist(),
            f["low"].tolist(),
            f["close"].tolist(),
            f["volume"].tolist(),
            f["interval_s"].tolist(),
        )
        stats = self.stats
        for s, t, o, h, lo, c, v, iv in zip(*columns, strict=True):
            stats.bars += 1
            stats.last_ts_s = t
            yield MarketBar(s, t, o, h, lo, c, v, iv)
