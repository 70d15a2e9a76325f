"""`tradeloop backtest` and `tradeloop trade` through click, with lake output."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from click.testing import CliRunner

from bench.bench_decision import build_models
from infra.cli import cli
from infra.lake import list_files, read_topic
from infra.objectstore import store_for_uri
from trader.feeds.sim import SimFeed


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_backtest_sim_writes_trades_png_summary_and_the_lake(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    out = tmp_path / "out"
    code, output = _invoke(
        "backtest",
        "--feed",
        "sim",
        "--bars",
        "22080",
        "--out",
        str(out),
        "--events-out",
        str(lake),
        "--run-id",
        "bt1",
        "--no-progress",
    )
    assert code == 0, output
    assert "22080 bars" in output and "S11" in output and "ALL" in output
    trades = pq.read_table(out / "trades.parquet").to_pandas()
    assert len(trades) > 10 and set(trades["symbol"]) == {"ES", "NQ"}
    assert (out / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bars"] == 22080 and summary["source"] == "sim"
    signals = read_topic(str(lake), "signals")
    outcomes = read_topic(str(lake), "outcomes")
    assert signals.num_rows > 0 and outcomes.num_rows == signals.num_rows
    assert set(signals.column("source").to_pylist()) == {"sim"}
    assert set(signals.column("run_id").to_pylist()) == {"bt1"}
    assert sum(outcomes.column("counterfactual").to_pylist()) == outcomes.num_rows - len(trades)
    files = list_files(store_for_uri(str(lake)), "signals")
    assert all(f["partition"] == 0 for f in files)
    assert {f["symbol"] for f in files} == {"ES", "NQ"}
    first_rows = signals.num_rows
    # the paper venue's order events are in the lake too: one entry fill per trade
    orders = read_topic(str(lake), "orders")
    kinds = orders.column("kind").to_pylist()
    roles = orders.column("role").to_pylist()
    entry_fills = [k == "order_filled" and r == "entry" for k, r in zip(kinds, roles, strict=True)]
    assert sum(entry_fills) == len(trades) and set(orders.column("venue").to_pylist()) == {"paper"}
    assert set(trades["event_id"]) <= set(outcomes.column("event_id").to_pylist())

    # a vendor CSV run into the same lake continues the offsets instead of overwriting
    rows = [
        {
            "timestamp": b.ts_s,
            "symbol": b.symbol,
            "open": b.open,
            "high": b.high,
            "low": b.low,
            "close": b.close,
            "volume": b.volume,
        }
        for b in SimFeed(("ES",), seed=30, days=3)
    ]
    csv = tmp_path / "vendor.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    code, output = _invoke(
        "backtest",
        "--data",
        str(csv),
        "--symbols",
        "ES",
        "--source",
        "vendor",
        "--out",
        str(tmp_path / "v"),
        "--events-out",
        str(lake),
        "--no-plot",
    )
    assert code == 0, output
    signals = read_topic(str(lake), "signals")
    sources = signals.column("source").to_pylist()
    assert sources.count("sim") == first_rows and sources.count("vendor") > 0
    offsets = signals.column("kafka_offset").to_pylist()
    assert len(offsets) == len(set(offsets))


def test_backtest_with_models_and_bad_data(tmp_path: Path) -> None:
    models = tmp_path / "models"
    build_models(models, small=True)
    code, output = _invoke(
        "backtest",
        "--feed",
        "sim",
        "--bars",
        "11040",
        "--models-dir",
        str(models),
        "--out",
        str(tmp_path / "o"),
        "--no-plot",
        "--no-progress",
        "--events-out",
        str(tmp_path / "lake"),
    )
    assert code == 0, output
    signals = read_topic(str(tmp_path / "lake"), "signals")
    assert set(signals.column("decision_path").to_pylist()) == {"models"}
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "timestamp,open,high,low,close,volume\n2024-03-05T15:00:00Z,10,11,9,10,5\n2024-03-05T15:01:00Z,10,9,11,10,5\n"
    )
    result = CliRunner().invoke(
        cli, ["backtest", "--data", str(bad), "--symbol", "ES", "--out", str(tmp_path / "b")]
    )
    assert result.exit_code != 0
    assert f"{bad}: row 2: high < low" in result.output
    result = CliRunner().invoke(
        cli,
        [
            "backtest",
            "--data",
            str(bad),
            "--symbol",
            "ES",
            "--skip-bad-rows",
            "--out",
            str(tmp_path / "b"),
            "--no-plot",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "skipped rows: {'high < low': 1}" in result.output
    result = CliRunner().invoke(cli, ["backtest", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "exactly one of --data" in result.output


def test_an_unknown_venue_is_refused_with_the_known_names(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["backtest", "--feed", "sim", "--bars", "100", "--out", str(tmp_path), "--venue", "nope"],
    )
    assert result.exit_code != 0
    assert "unknown venue 'nope'" in result.output and "paper" in result.output


def test_trade_keeps_trading_without_a_broker(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from infra.settings import get_settings
    from infra.stack import free_port

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.setenv("OUTBOX_DIR", str(tmp_path / "spool"))
    get_settings.cache_clear()
    try:
        code, output = _invoke(
            "trade",
            "--feed",
            "sim",
            "--speed",
            "0",
            "--max-bars",
            "8000",
            "--no-api",
            "--drain-timeout",
            "1",
        )
    finally:
        get_settings.cache_clear()
    assert code == 0, output
    assert "8000 bars" in output
    depth = int(output.rsplit("outbox depth ", 1)[1].split()[0])
    assert depth > 0  # everything stays spooled for the next run
    assert list((tmp_path / "spool").glob("seg-*.log"))


def test_backtest_writes_bars_to_the_lake_with_emit_bars(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from infra.settings import get_settings

    monkeypatch.setenv("EMIT_BARS", "1")
    get_settings.cache_clear()
    try:
        code, output = _invoke(
            "backtest",
            "--feed",
            "sim",
            "--bars",
            "3000",
            "--symbols",
            "ES",
            "--out",
            str(tmp_path / "o"),
            "--events-out",
            str(tmp_path / "lake"),
            "--no-plot",
            "--no-progress",
        )
    finally:
        get_settings.cache_clear()
    assert code == 0, output
    bars = read_topic(str(tmp_path / "lake"), "bars")
    assert bars.num_rows == 3000 and set(bars.column("source").to_pylist()) == {"sim"}


def test_backtest_incremental_writes_the_trades_and_summary_of_the_batched_default(
    tmp_path: Path,
) -> None:
    outs = {}
    for mode in ("batched", "incremental"):
        out = tmp_path / mode
        args = ["backtest", "--feed", "sim", "--bars", "12000", "--out", str(out)]
        args += ["--run-id", "same", "--no-progress", "--no-plot"]
        code, output = _invoke(*args, *(["--incremental"] if mode == "incremental" else []))
        assert code == 0, output
        outs[mode] = out
    summaries = {m: json.loads((o / "summary.json").read_text()) for m, o in outs.items()}
    assert summaries["batched"]["features"] == "batched"
    assert summaries["incremental"]["features"] == "incremental"
    assert summaries["batched"]["summary"] == summaries["incremental"]["summary"]
    assert summaries["batched"]["events"] == summaries["incremental"]["events"] > 0
    trades = {m: pq.read_table(o / "trades.parquet").to_pandas() for m, o in outs.items()}
    assert len(trades["batched"]) > 5
    pd.testing.assert_frame_equal(
        trades["batched"].drop(columns=["event_id", "ts_init", "signal_id"], errors="ignore"),
        trades["incremental"].drop(columns=["event_id", "ts_init", "signal_id"], errors="ignore"),
    )
