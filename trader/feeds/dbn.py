"""Databento DBN files (`.dbn`, `.dbn.zst`): OHLCV bars directly, trades aggregated to 1-minute bars.

Decoded with `databento-dbn`, Databento's own decoder. Records name instruments by id;
the file's symbology mappings (or in-stream symbol mapping records) turn an id into
the requested symbol, from which the root (`ES` of `ESZ4` or `ES.c.0`) is the
trader's symbol. Where a file holds several contracts of one root (raw symbols across
a roll), each day keeps the contract that traded the most that day (a volume roll).
OHLCV `ts_event` is the bar's open; the frame says so (`bar_ts="open"`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trader.feeds.base import FeedDataError

__all__ = ["DBN_SUFFIXES", "is_dbn", "read_dbn", "symbol_root"]

DBN_SUFFIXES = (".dbn", ".dbn.zst")
#: Bar length of each OHLCV schema; `trades` are aggregated to 1-minute bars.
SCHEMA_INTERVAL_S = {"ohlcv-1s": 1, "ohlcv-1m": 60, "ohlcv-1h": 3600, "ohlcv-1d": 86400}
TRADE_BAR_S = 60
_CHUNK_BYTES = 1 << 20
_NS = 1_000_000_000
_CONTRACT = re.compile(r"^([A-Z0-9]{1,5}?)([FGHJKMNQUVXZ])(\d{1,2})$")
_CONTINUOUS = re.compile(r"^([A-Z0-9]+)\.[CNV]\.\d+$")


def is_dbn(path: str | Path) -> bool:
    """Return whether a path names a DBN file by its extension."""
    return str(path).lower().endswith(DBN_SUFFIXES)


def symbol_root(symbol: str) -> str | None:
    """Return the root of a futures symbol (`ESZ4`, `ESZ24`, `ES.c.0` -> `ES`), else None."""
    s = symbol.strip().upper()
    m = _CONTINUOUS.match(s) or _CONTRACT.match(s)
    return m.group(1) if m else None


def _decode(path: Path) -> tuple[Any, list[Any]]:
    import databento_dbn as dbn

    if not path.exists():
        raise FeedDataError(str(path), None, "file does not exist")
    zst = str(path).lower().endswith(".zst")
    decoder = dbn.DBNDecoder(compression=dbn.Compression.from_str("zstd" if zst else "none"))
    records: list[Any] = []
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK_BYTES):
                decoder.write(chunk)
                records.extend(decoder.decode())
    except (ValueError, OSError, dbn.DBNError) as exc:  # type: ignore[misc]
        raise FeedDataError(str(path), None, f"not a readable DBN file: {exc}") from None
    if not records or not isinstance(records[0], dbn.Metadata):
        raise FeedDataError(str(path), None, "not a DBN file: no metadata header")
    return records[0], records[1:]


class _Symbology:
    """Instrument id (and date) -> requested symbol, from the header and in-stream mappings."""

    def __init__(self, metadata: Any) -> None:
        self.by_id: dict[int, list[tuple[dt.date, dt.date, str]]] = defaultdict(list)
        for requested, intervals in (metadata.mappings or {}).items():
            for iv in intervals:
                if str(iv["symbol"]).isdigit():
                    self.by_id[int(iv["symbol"])].append(
                        (iv["start_date"], iv["end_date"], str(requested))
                    )

    def learn(self, record: Any) -> None:
        """Take an in-stream symbol mapping record."""
        self.by_id[int(record.instrument_id)].append(
            (dt.date.min, dt.date.max, str(record.stype_in_symbol))
        )

    def name(self, instrument_id: int, ts_ns: int) -> str | None:
        """Return the requested symbol of an instrument on a record's day."""
        spans = self.by_id.get(instrument_id)
        if not spans:
            return None
        day = dt.datetime.fromtimestamp(ts_ns / _NS, dt.UTC).date()
        for start, end, name in spans:
            if start <= day < end or start == end == day:
                return name
        return spans[-1][2]


def _price(value: int, undef: int) -> float:
    return np.nan if value == undef else value / _NS


def read_dbn(path: str | Path) -> pd.DataFrame:
    """Return bars of a DBN file: symbol, contract, ts (bar open, epoch ns), open..volume.

    `frame.attrs["interval_s"]` is the bar length. Raise `FeedDataError` on a file that
    is not DBN, a schema with no bars, or records whose instrument has no symbol.
    """
    import databento_dbn as dbn

    path = Path(path)
    where = str(path)
    metadata, records = _decode(path)
    schema = str(metadata.schema or "")
    if schema not in SCHEMA_INTERVAL_S and schema != "trades":
        raise FeedDataError(
            where, None, f"schema {schema!r} has no bars: use ohlcv-1m (or ohlcv-1s/1h) or trades"
        )
    names = _Symbology(metadata)
    undef = dbn.UNDEF_PRICE
    rows: list[tuple[str, int, float, float, float, float, float]] = []
    unmapped: set[int] = set()
    for rec in records:
        if isinstance(rec, dbn.SymbolMappingMsg):
            names.learn(rec)
            continue
        if isinstance(rec, dbn.OHLCVMsg):
            values = [_price(v, undef) for v in (rec.open, rec.high, rec.low, rec.close)]
            size = float(rec.volume)
        elif isinstance(rec, dbn.TradeMsg):
            if rec.action != dbn.Action.TRADE:
                continue
            values = [_price(rec.price, undef)] * 4
            size = float(rec.size)
        else:
            continue
        name = names.name(int(rec.instrument_id), int(rec.ts_event))
        if name is None:
            unmapped.add(int(rec.instrument_id))
            continue
        o, h, lo, c = values
        rows.append((name, int(rec.ts_event), o, h, lo, c, size))
    if unmapped:
        ids = ", ".join(str(i) for i in sorted(unmapped)[:5])
        raise FeedDataError(where, None, f"no symbol mapping for instrument id(s) {ids}")
    frame = pd.DataFrame(
        rows, columns=["requested", "ts", "open", "high", "low", "close", "volume"]
    )
    if frame.empty:
        raise FeedDataError(where, None, f"no {schema} records in the file")
    roots = {r: symbol_root(r) for r in frame["requested"].unique()}
    if bad := [r for r, root in roots.items() if root is None]:
        raise FeedDataError(
            where,
            None,
            f"cannot tell the futures root of {', '.join(bad[:3])}: request raw contract "
            "symbols (ESZ4) or continuous ones (ES.c.0)",
        )
    frame["symbol"] = frame["requested"].map(roots)
    frame["contract"] = [
        r if _CONTRACT.match(r.upper()) else "" for r in frame["requested"].to_numpy()
    ]
    if schema == "trades":
        frame = _trade_bars(frame)
        interval_s = TRADE_BAR_S
    else:
        interval_s = SCHEMA_INTERVAL_S[schema]
    frame = _volume_roll(frame)
    frame.attrs["interval_s"] = interval_s
    return frame[["symbol", "contract", "ts", "open", "high", "low", "close", "volume"]]


def _trade_bars(trades: pd.DataFrame) -> pd.DataFrame:
    """Aggregate trades to 1-minute OHLCV bars stamped at their open."""
    step = TRADE_BAR_S * _NS
    trades = trades.assign(ts=(trades["ts"] // step) * step)
    grouped = trades.groupby(["symbol", "contract", "requested", "ts"], sort=True)
    bars = grouped.agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
    )
    return bars.reset_index()


def _volume_roll(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep, per root and UTC day, the contract with the most volume that day."""
    if frame.groupby("symbol")["requested"].nunique().max() <= 1:
        return frame.sort_values("ts", kind="stable").reset_index(drop=True)
    day = frame["ts"] // (86400 * _NS)
    volume = frame.assign(day=day).groupby(["symbol", "day", "requested"])["volume"].sum()
    keep = volume.groupby(level=["symbol", "day"]).idxmax().tolist()
    chosen = set(keep)
    mask = [
        (s, d, r) in chosen
        for s, d, r in zip(frame["symbol"], day, frame["requested"], strict=True)
    ]
    return frame[mask].sort_values("ts", kind="stable").reset_index(drop=True)
