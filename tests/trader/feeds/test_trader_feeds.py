"""Feeds: the deterministic simulator, CSV/parquet loading with typed errors, pacing."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.compute import et_clock
from trader.feeds import FeedDataError, Pacer, open_feed
from trader.feeds.files import FileFeed
from trader.feeds.sim import SimFeed


def _take(feed, n: int) -> list:
    return list(itertools.islice(iter(feed), n))


def test_sim_is_deterministic_per_seed_and_independent_of_reads() -> None:
    a = [
        (b.symbol, b.ts_s, b.open, b.high, b.low, b.close, b.volume)
        for b in _take(SimFeed(seed=5), 3000)
    ]
    b = [
        (b.symbol, b.ts_s, b.open, b.high, b.low, b.close, b.volume)
        for b in _take(SimFeed(seed=5, days=3), 3000)
    ]
    c = [(b.symbol, b.ts_s, b.close) for b in _take(SimFeed(seed=6), 3000)]
    assert a == b
    assert [x[:3] for x in a[:50]] != c[:50] or [x[5] for x in a] != [x[2] for x in c]


def test_sim_bars_are_valid_correlated_and_on_the_tick_grid() -> None:
    feed = SimFeed(("ES", "NQ"), seed=1, days=10)
    bars = list(feed)
    # nine 23-hour Globex days, then MLK day 2024-01-15 (the exchange calendar: 13:00 ET close)
    assert len(bars) == (9 * 23 * 60 + 19 * 60) * 2
    last: dict[str, int] = {}
    for bar in bars:
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.low > 0 and bar.volume >= 1
        for p in (bar.open, bar.high, bar.low, bar.close):
            assert abs(p / 0.25 - round(p / 0.25)) < 1e-9
        assert bar.ts_s > last.get(bar.symbol, 0)
        last[bar.symbol] = bar.ts_s
    es = np.array([b.close for b in bars if b.symbol == "ES"])
    nq = np.array([b.close for b in bars if b.symbol == "NQ"])
    corr = np.corrcoef(np.diff(np.log(es)), np.diff(np.log(nq)))[0, 1]
    assert corr > 0.6
    assert all(c > 0 for c in feed.regime_counts), feed.regime_counts
    # intraday volume curve: the regular-session open is busier than the night
    vol_open = [b.volume for b in bars if b.symbol == "ES" and 571 <= et_clock(b.ts_s)[0] <= 600]
    vol_night = [b.volume for b in bars if b.symbol == "ES" and 60 <= et_clock(b.ts_s)[0] <= 240]
    assert np.mean(vol_open) > 5 * np.mean(vol_night)
    # the first bar closes one minute after the 18:00 ET Globex open
    assert et_clock(bars[0].ts_s)[0] == 18 * 60 + 1


def _write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _good_rows(n: int = 5, symbol: str | None = "ES") -> list[dict]:
    rows = []
    for i in range(n):
        p = 5000 + i
        row = {
            "timestamp": f"2024-03-05T15:{i:02d}:00Z",
            "open": p,
            "high": p + 1,
            "low": p - 1,
            "close": p + 0.5,
            "volume": 10 + i,
        }
        if symbol:
            row["symbol"] = symbol
        rows.append(row)
    return rows


def test_csv_and_parquet_feeds_read_the_common_layout(tmp_path: Path) -> None:
    csv = _write_csv(tmp_path / "bars.csv", _good_rows())
    bars = list(open_feed(f"csv:{csv}", symbols=("ES",)))
    assert [b.close for b in bars] == [5000.5, 5001.5, 5002.5, 5003.5, 5004.5]
    assert bars[0].ts_event.isoformat() == "2024-03-05T15:00:00+00:00"
    pq_path = tmp_path / "bars.parquet"
    frame = pd.DataFrame(_good_rows(symbol=None))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    frame.to_parquet(pq_path)
    pbars = list(open_feed(f"parquet:{pq_path}", symbols=("NQ",), symbol="NQ"))
    assert [(b.symbol, b.ts_s, b.close) for b in pbars] == [("NQ", b.ts_s, b.close) for b in bars]
    # epoch milliseconds and bar-open timestamps
    rows = _good_rows()
    for i, r in enumerate(rows):
        r["timestamp"] = (1709650800 + 60 * i) * 1000
    feed = FileFeed(_write_csv(tmp_path / "ms.csv", rows), bar_ts="open")
    assert [b.ts_s for b in feed] == [1709650800 + 60 * (i + 1) for i in range(5)]


BAD_CASES = [
    ("close", float("nan"), "close is missing or NaN"),
    ("low", -1.0, "low is not positive"),
    ("high", 4990.0, "high < low"),
    ("open", 5100.0, "open outside [low, high]"),
    ("timestamp", "not-a-time", "unparseable timestamp"),
    ("timestamp", "2024-03-05T15:02:00Z", "duplicated timestamp"),
    ("timestamp", "2024-03-05T14:00:00Z", "timestamp out of order"),
]


@pytest.mark.parametrize(("column", "value", "reason"), BAD_CASES)
def test_bad_rows_raise_with_file_and_row_or_are_skipped(
    tmp_path: Path, column: str, value: object, reason: str
) -> None:
    rows = _good_rows()
    rows[3][column] = value  # data row 4
    path = _write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(FeedDataError) as err:
        FileFeed(path)
    assert err.value.row == 4
    assert str(path) in str(err.value) and reason in str(err.value)
    feed = FileFeed(path, skip_bad=True)
    assert len(list(feed)) == 4
    assert feed.stats.skipped == 1
    assert any(reason in r for r in feed.stats.skipped_by_reason)


def test_missing_columns_and_symbol_are_named(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "volume"} for r in _good_rows()]
    with pytest.raises(FeedDataError, match="missing column"):
        FileFeed(_write_csv(tmp_path / "novol.csv", rows))
    with pytest.raises(FeedDataError, match="--symbol"):
        FileFeed(_write_csv(tmp_path / "nosym.csv", _good_rows(symbol=None)))
    with pytest.raises(FeedDataError, match="does not exist"):
        FileFeed(tmp_path / "nope.csv")


def test_pacer_spaces_bars_by_speed() -> None:
    pacer = Pacer(60.0)  # one bar-minute per second
    assert pacer.delay_s(1_000_000) == 0.0
    assert 0.9 < pacer.delay_s(1_000_060) <= 1.0
    assert Pacer(0).delay_s(5) == 0.0
