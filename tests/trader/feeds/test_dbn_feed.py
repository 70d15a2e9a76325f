"""Databento DBN files: OHLCV-1m and trades, written with databento-dbn, read as the trader's bars."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from tests.kit.dbn import write_ohlcv_1m, write_trades
from trader.cli import backtest
from trader.feeds import FeedDataError, open_feed
from trader.feeds.dbn import read_dbn, symbol_root
from trader.feeds.sim import SimFeed

#: Columns that are fresh per run (uuid event ids, creation times), not derived from the bars.
RANDOM_IDS = ("event_id", "signal_id", "ts_init")
T0 = 1_733_149_800  # 2024-12-02 14:30 UTC, a bar open


def _bars(feed) -> list[tuple]:
    return [
        (b.symbol, b.ts_s, b.open, b.high, b.low, b.close, b.volume, b.interval_s) for b in feed
    ]


@pytest.mark.parametrize("name", ["bars.dbn", "bars.dbn.zst"])
def test_ohlcv_1m_bars_close_one_minute_after_their_open(tmp_path: Path, name: str) -> None:
    path = write_ohlcv_1m(
        tmp_path / name,
        [
            ("ESZ4", T0, 6000.0, 6001.0, 5999.75, 6000.5, 10),
            ("NQZ4", T0, 21000.0, 21004.25, 20999.0, 21003.0, 7),
            ("ESZ4", T0 + 60, 6000.5, 6002.0, 6000.0, 6001.75, 12),
        ],
    )
    by_prefix = _bars(open_feed(f"dbn:{path}", symbols=("ES", "NQ")))
    by_extension = _bars(open_feed(str(path), symbols=("ES", "NQ")))
    assert (
        by_prefix
        == by_extension
        == [
            ("ES", T0 + 60, 6000.0, 6001.0, 5999.75, 6000.5, 10.0, 60),
            ("NQ", T0 + 60, 21000.0, 21004.25, 20999.0, 21003.0, 7.0, 60),
            ("ES", T0 + 120, 6000.5, 6002.0, 6000.0, 6001.75, 12.0, 60),
        ]
    )
    assert _bars(open_feed(f"dbn:{path}", symbols=("NQ",))) == [by_prefix[1]]


def test_trades_are_aggregated_to_one_minute_bars(tmp_path: Path) -> None:
    ns = 1_000_000_000
    trades = [
        ("ESZ4", T0 * ns + 1 * ns, 6000.00, 2),
        ("ESZ4", T0 * ns + 20 * ns, 6001.25, 1),
        ("ESZ4", T0 * ns + 40 * ns, 5999.50, 4),
        ("ESZ4", T0 * ns + 59 * ns, 6000.75, 3),
        ("ESZ4", (T0 + 60) * ns, 6000.50, 5),  # the next minute's first trade
        ("ESZ4", (T0 + 61) * ns, 6002.00, 1),
    ]
    path = write_trades(tmp_path / "trades.dbn.zst", trades)
    assert _bars(open_feed(str(path), symbols=("ES",))) == [
        ("ES", T0 + 60, 6000.00, 6001.25, 5999.50, 6000.75, 10.0, 60),
        ("ES", T0 + 120, 6000.50, 6002.00, 6000.50, 6002.00, 6.0, 60),
    ]


def test_a_roll_in_one_file_keeps_the_day_s_most_traded_contract(tmp_path: Path) -> None:
    day = 86_400
    rows = []
    for d, (z_vol, h_vol) in enumerate([(900, 100), (200, 800)]):
        for k in range(3):
            ts = T0 + d * day + 60 * k
            rows.append(("ESZ4", ts, 6000.0, 6001.0, 5999.0, 6000.0, z_vol))
            rows.append(("ESH5", ts, 6050.0, 6051.0, 6049.0, 6050.0, h_vol))
    frame = read_dbn(write_ohlcv_1m(tmp_path / "roll.dbn", rows))
    per_day = frame.assign(day=frame["ts"] // (day * 10**9)).groupby("day")["contract"].unique()
    assert [list(c) for c in per_day] == [["ESZ4"], ["ESH5"]]
    assert len(frame) == 6 and frame["ts"].is_monotonic_increasing


def test_bad_dbn_input_is_refused_with_the_reason(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dbn"
    junk.write_bytes(b"this is not DBN at all")
    with pytest.raises(FeedDataError, match="DBN"):
        open_feed(str(junk), symbols=("ES",))
    with pytest.raises(FeedDataError, match="does not exist"):
        open_feed(f"dbn:{tmp_path / 'missing.dbn'}", symbols=("ES",))
    spread = write_ohlcv_1m(tmp_path / "spread.dbn", [("ESZ4-ESH5", T0, 50.0, 51.0, 49.0, 50.0, 1)])
    with pytest.raises(FeedDataError, match="futures root of ESZ4-ESH5"):
        open_feed(str(spread), symbols=("ES",))


def test_symbol_roots() -> None:
    assert [symbol_root(s) for s in ("ESZ4", "ESZ24", "NQH5", "ES.c.0", "MESM5", "ES")] == [
        "ES", "ES", "NQ", "ES", "MES", None,
    ]  # fmt: skip


def test_a_dbn_file_backtests_like_the_same_bars_in_csv(tmp_path: Path) -> None:
    bars = list(itertools.islice(SimFeed(("ES",), seed=3, days=3), 3 * 23 * 60))
    rows = [("ESZ4", b.ts_s - 60, b.open, b.high, b.low, b.close, round(b.volume)) for b in bars]
    dbn_path = write_ohlcv_1m(tmp_path / "es.dbn.zst", rows)
    csv_path = tmp_path / "es.csv"
    pd.DataFrame(
        {
            "timestamp": [b.ts_s for b in bars],
            "symbol": "ES",
            "open": [b.open for b in bars],
            "high": [b.high for b in bars],
            "low": [b.low for b in bars],
            "close": [b.close for b in bars],
            "volume": [r[-1] for r in rows],
        }
    ).to_csv(csv_path, index=False)
    trades = {}
    for label, data in (("dbn", dbn_path), ("csv", csv_path)):
        out = tmp_path / label
        args = ["--data", str(data), "--symbols", "ES", "--out", str(out), "--no-progress"]
        result = CliRunner().invoke(backtest, [*args, "--no-plot", "--run-id", "r1"])
        assert result.exit_code == 0, result.output
        frame = pd.read_parquet(out / "trades.parquet")
        trades[label] = frame.drop(columns=[c for c in RANDOM_IDS if c in frame.columns])
    assert len(trades["dbn"]) > 0
    pd.testing.assert_frame_equal(trades["dbn"], trades["csv"])
