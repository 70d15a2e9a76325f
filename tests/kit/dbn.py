"""Write Databento DBN files with `databento-dbn` itself, for feed tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace

import databento_dbn as dbn
import zstandard

__all__ = ["write_ohlcv_1m", "write_trades"]

_NS = 1_000_000_000


def _metadata(schema: dbn.Schema, ids: dict[str, int], start_ns: int) -> bytes:
    day = dt.datetime.fromtimestamp(start_ns / _NS, dt.UTC).date()
    mappings = [
        SimpleNamespace(
            raw_symbol=name,
            intervals=[
                SimpleNamespace(
                    start_date=day, end_date=day + dt.timedelta(days=400), symbol=str(iid)
                )
            ],
        )
        for name, iid in ids.items()
    ]
    meta = dbn.Metadata(
        dataset="GLBX.MDP3",
        start=start_ns,
        stype_in=dbn.SType.RAW_SYMBOL,
        stype_out=dbn.SType.INSTRUMENT_ID,
        schema=schema,
        symbols=list(ids),
        mappings=mappings,
    )
    return bytes(meta.encode())


def _write(path: Path, data: bytes) -> Path:
    if path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def _px(value: float) -> int:
    return round(value * _NS)


def write_ohlcv_1m(
    path: Path, bars: Sequence[tuple[str, int, float, float, float, float, float]]
) -> Path:
    """Write OHLCV-1m bars given as (raw symbol, open time epoch s, o, h, l, c, volume)."""
    ids = {name: 100 + i for i, name in enumerate(dict.fromkeys(b[0] for b in bars))}
    start = min(b[1] for b in bars) * _NS
    out = bytearray(_metadata(dbn.Schema.OHLCV_1M, ids, start))
    for name, ts_s, o, h, lo, c, v in bars:
        rec = dbn.OHLCVMsg(
            dbn.RType.OHLCV_1M, 1, ids[name], ts_s * _NS, _px(o), _px(h), _px(lo), _px(c), int(v)
        )
        out += bytes(rec)
    return _write(path, bytes(out))


def write_trades(path: Path, trades: Iterable[tuple[str, int, float, int]]) -> Path:
    """Write trades given as (raw symbol, epoch ns, price, size)."""
    trades = list(trades)
    ids = {name: 200 + i for i, name in enumerate(dict.fromkeys(t[0] for t in trades))}
    out = bytearray(_metadata(dbn.Schema.TRADES, ids, min(t[1] for t in trades)))
    for seq, (name, ts_ns, price, size) in enumerate(trades):
        rec = dbn.TradeMsg(
            1,
            ids[name],
            ts_ns,
            _px(price),
            size,
            dbn.Action.TRADE,
            dbn.Side.BID,
            0,
            ts_ns + 1000,
            sequence=seq,
        )
        out += bytes(rec)
    return _write(path, bytes(out))
