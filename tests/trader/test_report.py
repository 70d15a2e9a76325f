"""HTML reports: a synthetic backtest frame, and `tradeloop report --date` from the lake."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from infra.contracts import STRATEGIES, Decision, SignalSnapshot, encode
from infra.lake import write_batch
from infra.objectstore import object_store, store_for_uri
from tests.conftest import SettingsFactory
from tests.helpers import settings_env
from tests.kit.events import manifest, outcome
from trader.report import (
    MANIFEST_KEY,
    ReportInputError,
    calibration_bins,
    summary_stats,
    write_backtest_report,
)

TRADELOOP = [sys.executable, "-c", "from infra.cli import main; main()"]
IMG = re.compile(r"<img alt='([^']+)' src='data:image/png;base64,([A-Za-z0-9+/=]+)'>")


def _trades(n: int = 240, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = datetime(2024, 5, 1, 13, 30, tzinfo=UTC)
    exits = [start + timedelta(minutes=int(m)) for m in np.sort(rng.integers(0, 4 * 24 * 60, n))]
    strategies = rng.choice(list(STRATEGIES), n)
    r = rng.normal(0.15, 1.1, n).round(3)
    prob = np.clip(0.5 + 0.25 * np.tanh(r) + rng.normal(0, 0.1, n), 0.01, 0.99)
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "symbol": rng.choice(["ES", "NQ"], n),
            "strategy": strategies,
            "entry_ts": [t - timedelta(minutes=9) for t in exits],
            "exit_ts": exits,
            "pnl_usd": (r * 250.0).round(2),
            "r_multiple": r,
            "commission_usd": 4.5,
            "counterfactual": False,
            "meta_prob": prob,
            "predicted_r": r * 0.5 + rng.normal(0, 0.3, n),
        }
    )


def _images(html_text: str) -> dict[str, bytes]:
    return {alt: base64.b64decode(b64) for alt, b64 in IMG.findall(html_text)}


def test_backtest_report_is_one_self_contained_file(tmp_path: Path) -> None:
    trades = _trades()
    extra = trades.iloc[:3].assign(counterfactual=True, event_id=["c1", "c2", "c3"], pnl_usd=1e6)
    frame = pd.concat([trades, extra, trades.iloc[:2]], ignore_index=True)  # + dupes
    models = manifest(datetime(2024, 5, 1, tzinfo=UTC), "rel-9", 9).model_dump(
        mode="json", by_alias=True
    )
    models["artifacts"][0]["metrics"].update(
        {"calib_pred_0": 0.2, "calib_obs_0": 0.25, "calib_pred_1": 0.6, "calib_obs_1": 0.55}
    )

    path = write_backtest_report(frame, tmp_path / "out", "Backtest ES/NQ May", models)

    assert path == tmp_path / "out" / "backtest-es-nq-may.html"
    text = path.read_text()
    assert list(path.parent.iterdir()) == [path]  # nothing beside it: plots are embedded
    assert "src='http" not in text and "<link" not in text and "<script" not in text
    for section in ("summary", "equity", "drawdown", "r-multiples", "trades-per-hour", "by-strategy", "models", "calibration"):  # fmt: skip
        assert f"id='{section}'" in text, section
    images = _images(text)
    assert set(images) == {
        "equity curve", "drawdown", "R-multiple distribution", "trades per hour", "calibration",
    }  # fmt: skip
    for png in images.values():
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    # counterfactuals and duplicate event ids are not trades
    assert f"<td>trades</td><td>{len(trades)}</td>" in text
    total = trades["pnl_usd"].sum()
    assert f"{total:,.2f}" in text
    # the serving models: release, families and their metrics (calibration keys are plotted)
    assert "rel-9" in text and "log_loss" in text and "mean_reward" in text
    assert "gate: <b>release</b>" in text
    assert "calib_pred_0" not in text
    for strat in STRATEGIES:
        assert f"<td>{strat}</td>" in text


def test_summary_figures_are_right() -> None:
    t0 = datetime(2024, 5, 1, 14, tzinfo=UTC)
    df = pd.DataFrame(
        {
            "strategy": ["S2"] * 5,
            "pnl_usd": [100.0, -50.0, -80.0, 200.0, -20.0],
            "r_multiple": [1.0, -0.5, -0.8, 2.0, -0.2],
            "exit_ts": [t0 + timedelta(hours=i) for i in range(5)],
        }
    )
    from trader.report import _prepare

    stats = summary_stats(_prepare(df, "UTC"))
    assert stats["trades"] == 5 and stats["wins"] == 2
    assert stats["win_rate"] == pytest.approx(0.4)
    assert stats["pnl_usd"] == pytest.approx(150.0)
    assert stats["avg_r"] == pytest.approx(0.3)
    assert stats["profit_factor"] == pytest.approx(300 / 150)
    assert stats["max_drawdown_usd"] == pytest.approx(-130.0)  # peak 100 -> trough -30
    assert stats["days"] == 1 and stats["sharpe_daily_annualized"] is None


def test_calibration_bins() -> None:
    p = pd.Series([0.05, 0.15, 0.15, 0.85, 0.95, 0.95])
    y = pd.Series([0, 0, 1, 1, 1, 0])
    bins = calibration_bins(p, y, bins=10)
    assert [b["n"] for b in bins] == [1, 2, 1, 2]
    assert bins[1]["obs"] == pytest.approx(0.5) and bins[1]["pred"] == pytest.approx(0.15)
    q = calibration_bins(
        pd.Series(range(100), dtype=float), pd.Series(range(100), dtype=float), 4, quantile=True
    )
    assert len(q) == 4 and all(b["n"] == 25 for b in q)


def test_bad_frames_and_empty_periods(tmp_path: Path) -> None:
    with pytest.raises(ReportInputError, match="r_multiple"):
        write_backtest_report(
            pd.DataFrame({"strategy": ["S2"], "pnl_usd": [1.0], "exit_ts": [datetime.now(UTC)]}),
            tmp_path,
            "x",
        )
    with pytest.raises(ReportInputError, match="time zone"):
        write_backtest_report(_trades(10), tmp_path, "x", tz="Mars/Olympus")
    empty = _trades(0)
    path = write_backtest_report(empty, tmp_path, "empty day", None, tz="America/Chicago")
    text = path.read_text()
    assert "No trades" in text and "no model manifest given" in text
    assert _images(text) == {}


def test_report_command_reads_the_lake_and_the_manifest(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(kafka=False, s3=True)
    day = datetime(2024, 5, 2, tzinfo=UTC)
    lake = store_for_uri(settings.lake, settings)
    signals, outcomes = [], []
    for i, (sym, strat, pnl, r, prob) in enumerate(
        [
            ("ES", "S2", 250.0, 1.0, 0.7),
            ("ES", "S3", -125.0, -0.5, 0.4),
            ("NQ", "S6", 400.0, 2.0, 0.8),
        ]
    ):
        at = day + timedelta(hours=14, minutes=10 * i)
        sig = SignalSnapshot(
            ts_event=at - timedelta(minutes=5), symbol=sym, strategy=strat, side="long",
            entry=5000.0, stop=4990.0, target=5020.0, feature_names=("ret_1",), features=(0.1,),
            decision=Decision(path="models", taken=True, reason="ok", chosen_strategy=strat,
                              probabilities={strat: prob}, predicted_r=r / 2, contracts=1),
        )  # fmt: skip
        out = outcome(at, sym, strat, pnl, r).model_copy(update={"signal_id": sig.event_id})
        signals.append(
            {**sig.to_dict(), "kafka_partition": 0, "kafka_offset": i, "payload": encode(sig)}
        )
        outcomes.append(
            {**out.to_dict(), "kafka_partition": 0, "kafka_offset": i, "payload": encode(out)}
        )
    cf = outcome(day + timedelta(hours=16), "NQ", "S11", 999.0, 4.0, counterfactual=True)
    outcomes.append(
        {**cf.to_dict(), "kafka_partition": 0, "kafka_offset": 3, "payload": encode(cf)}
    )
    other_day = outcome(day - timedelta(hours=2), "ES", "S2", 6123.0, 3.0)
    outcomes.append(
        {
            **other_day.to_dict(),
            "kafka_partition": 0,
            "kafka_offset": 4,
            "payload": encode(other_day),
        }
    )
    assert write_batch(lake, "signals", 0, signals)
    assert write_batch(lake, "outcomes", 0, outcomes)
    object_store(settings).put(MANIFEST_KEY, encode(manifest(day, "rel-3", 3)))

    proc = subprocess.run(
        [*TRADELOOP, "report", "--date", "2024-05-02", "--out", str(tmp_path / "r")],
        env=settings_env(settings), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "3 trades and 1 counterfactuals" in proc.stdout
    assert "3 signals joined" in proc.stdout
    path = tmp_path / "r" / "tradeloop-2024-05-02.html"
    assert f"wrote {path}" in proc.stdout
    text = path.read_text()
    assert "<td>trades</td><td>3</td>" in text
    assert "525.00" in text and "6,123" not in text
    assert "rel-3" in text and "log_loss" in text
    assert set(_images(text)) >= {"equity curve", "drawdown", "calibration"}


def test_report_command_rejects_a_bad_date() -> None:
    proc = subprocess.run(
        [*TRADELOOP, "report", "--date", "May 2nd"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "YYYY-MM-DD" in proc.stderr


def test_report_accepts_the_trades_of_a_real_backtest(tmp_path: Path) -> None:
    out = tmp_path / "bt"
    proc = subprocess.run(
        [*TRADELOOP, "backtest", "--feed", "sim", "--bars", "12000", "--out", str(out), "--no-plot"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    trades = pd.read_parquet(out / "trades.parquet")
    assert len(trades) > 0
    path = write_backtest_report(trades, tmp_path / "report", "sim backtest", None)
    text = path.read_text()
    assert f"<td>trades</td><td>{len(trades)}</td>" in text
    assert {"equity curve", "drawdown", "R-multiple distribution", "trades per hour"} <= set(
        _images(text)
    )
