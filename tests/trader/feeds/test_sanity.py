"""Data that does not fit the instrument or the strategies is refused before any trade."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from trader.cli import backtest
from trader.core.instruments import BUILTIN
from trader.feeds import open_feed
from trader.feeds.sanity import DataMismatchError, check_fit
from trader.feeds.sim import SimFeed

START = pd.Timestamp("2024-03-04 00:00", tz="UTC")


def _frame(n: int, step_s: int, price: float, tick: float, symbol: str = "ES") -> pd.DataFrame:
    """A random walk of `n` bars, `step_s` apart, moving a few `tick`s a bar."""
    rng = np.random.default_rng(4)
    close = price + np.cumsum(rng.normal(0, 3 * tick, n))
    high = close + np.abs(rng.normal(0, 2 * tick, n))
    low = close - np.abs(rng.normal(0, 2 * tick, n))
    ts = START + pd.to_timedelta(np.arange(1, n + 1) * step_s, unit="s")
    return pd.DataFrame(
        {"timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "symbol": symbol, "open": close,
         "high": high, "low": low, "close": close, "volume": 100}
    )  # fmt: skip


def _write(tmp_path: Path, frame: pd.DataFrame, name: str = "bars.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_eurusd_prices_run_as_es_are_refused_naming_the_tick(tmp_path: Path) -> None:
    path = _write(tmp_path, _frame(2000, 60, 1.0850, 0.00005))
    with pytest.raises(DataMismatchError) as err:
        open_feed(f"csv:{path}", symbols=("ES",))
    text = str(err.value)
    assert "less than one ES tick (0.25)" in text and "INSTRUMENTS_JSON" in text
    assert str(path) in text


def test_hourly_and_daily_bars_are_refused_naming_the_bar_length(tmp_path: Path) -> None:
    for step, words in ((3600, "1 hour"), (86400, "1 day")):
        path = _write(tmp_path, _frame(300, step, 5000.0, 0.25), f"{step}.csv")
        with pytest.raises(DataMismatchError, match=f"bars are {words} long.*1 minute"):
            open_feed(str(path), symbols=("ES",))


def test_five_minute_bars_trade_with_a_warning(tmp_path: Path) -> None:
    path = _write(tmp_path, _frame(500, 300, 5000.0, 0.25))
    feed = open_feed(str(path), symbols=("ES",))
    assert len(feed.warnings) == 1 and "5 minutes long" in feed.warnings[0]


def test_real_es_and_nq_bars_pass_quiet_hours_included() -> None:
    bars = list(itertools.islice(SimFeed(("ES", "NQ"), seed=2, days=5), 5 * 23 * 60 * 2))
    frame = pd.DataFrame(
        [(b.symbol, b.high, b.low, b.close, b.interval_s) for b in bars],
        columns=["symbol", "high", "low", "close", "interval_s"],
    )
    assert check_fit(frame, BUILTIN, "sim") == []


def test_an_instrument_from_settings_is_checked_with_its_own_tick() -> None:
    frame = _frame(1000, 60, 1.0850, 0.00005, symbol="6E").assign(interval_s=60)
    from trader.core.instruments import Instrument

    fx = {"6E": Instrument("6E", 0.00005, 125_000.0)}
    assert check_fit(frame, fx, "fx.csv") == []
    with pytest.raises(DataMismatchError, match="6E tick"):
        check_fit(frame, {"6E": Instrument("6E", 0.01, 125_000.0)}, "fx.csv")


def test_the_backtest_refuses_before_any_trade(tmp_path: Path) -> None:
    path = _write(tmp_path, _frame(2000, 60, 1.0850, 0.00005))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        backtest, ["--data", str(path), "--symbols", "ES", "--out", str(out), "--no-progress"]
    )
    assert result.exit_code != 0
    assert "less than one ES tick" in result.output
    assert not (out / "trades.parquet").exists()
