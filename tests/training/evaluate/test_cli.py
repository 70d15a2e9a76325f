"""`tradeloop evaluate` end to end: three arms on a small sim history, resume, a release on EURUSD."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from infra.settings import Settings, get_settings, settings_env
from tests.conftest import SettingsFactory
from trader.cli import backtest
from training.evaluate.cli import evaluate
from training.release import Registry

pytestmark = pytest.mark.slow

DAYS = 2  # one retrain step (after the first day): the budget of these tests
SIM = ["--feed", "sim", "--days", str(DAYS), "--symbols", "ES,NQ", "--seed", "7"]
SIX_E = '{"6E": {"tick_size": 0.00005, "point_value_usd": 125000}}'


def _cli(settings: Settings, *args: str) -> Result:
    """Invoke `tradeloop VERB ARGS` in this process with `settings` as the environment."""
    verb = {"evaluate": evaluate, "backtest": backtest}[args[0]]
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(verb, list(args[1:]), env=settings_env(settings))
    finally:
        get_settings.cache_clear()


def _summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def settings(make_module_settings: SettingsFactory) -> Settings:
    return make_module_settings(kafka=False, INSTRUMENTS_JSON=SIX_E)


@pytest.fixture(scope="module")
def full_run(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "full"
    proc = _cli(
        settings, "evaluate", *SIM, "--retrain-every", "1d", "--out", str(out), "--no-progress"
    )
    assert proc.exit_code == 0, proc.output[-3000:]
    assert "learning_vs_rules" in proc.output and "report:" in proc.output
    return out


def test_three_arms_trade_the_same_bars_with_the_engine_of_a_backtest(
    full_run: Path, settings: Settings, tmp_path: Path
) -> None:
    s = _summary(full_run)
    assert set(s["arms"]) == {"learning", "rules", "frozen"}
    for arm in s["arms"].values():
        assert {"ALL", "ES", "NQ"} <= set(arm)
        assert set(arm["ALL"]["ALL"]) == {
            "trades", "pnl_usd", "sharpe", "sortino", "max_drawdown_usd", "avg_r", "hit_rate",
            "turnover_contracts_per_day",
        }  # fmt: skip
    # the rules arm is exactly what `tradeloop backtest` trades on the same bars
    bars = s["run"]["bars"]
    bt = tmp_path / "bt"
    proc = _cli(settings, "backtest", "--feed", "sim", "--bars", str(bars), "--symbols", "ES,NQ",
                "--seed", "7", "--out", str(bt), "--no-progress", "--no-plot")  # fmt: skip
    assert proc.exit_code == 0, proc.output[-2000:]
    trades = pd.read_parquet(bt / "trades.parquet")
    rules = s["arms"]["rules"]["ALL"]["ALL"]
    assert rules["trades"] == len(trades) > 0
    assert rules["pnl_usd"] == pytest.approx(trades["pnl_usd"].sum())
    # until the first release every arm is the rules path: the same trades
    first = min(st["cut_s"] for st in s["steps"] if st["status"] == "released")
    early = {
        arm: pd.concat(pd.read_parquet(p) for p in sorted((full_run / "arms" / arm / "trades").glob("*.parquet")))
        for arm in ("learning", "rules", "frozen")
    }  # fmt: skip
    before = {
        arm: t.loc[pd.to_datetime(t["exit_ts"], utc=True) < pd.Timestamp(first, unit="s", tz="UTC"), "pnl_usd"].tolist()
        for arm, t in early.items()
    }  # fmt: skip
    assert before["learning"] == before["rules"] == before["frozen"]


def test_each_step_trains_point_in_time_and_the_release_is_signed_and_swapped(
    full_run: Path, settings: Settings
) -> None:
    s = _summary(full_run)
    steps = s["steps"]
    assert [st["number"] for st in steps] == list(range(len(steps))) and len(steps) == DAYS - 1
    released = [st for st in steps if st["status"] == "released"]
    assert released and released[0]["swapped"] == ["learning", "frozen"]
    assert s["releases"] == len(released)
    for st in steps:
        run = json.loads(
            (full_run / "training" / f"step-{st['number']:04d}" / "run.json").read_text()
        )
        last_signal = pd.Timestamp(run["window"][1])
        assert last_signal < pd.Timestamp(st["cut_s"], unit="s", tz="UTC")
    store = settings.model_copy(update={"store_dir": str(full_run / "store")})
    registry = Registry(store)
    history = registry.history()
    assert [m.release for m in history] == [st["release"] for st in released]
    assert all(m.signatures for m in history)
    assert not (settings.store_root / "models").exists()  # the evaluation's store only


def test_report_holds_the_edges_with_intervals_the_dsr_and_the_plots(full_run: Path) -> None:
    s = _summary(full_run)
    assert set(s["edges"]) == {"learning_vs_rules", "learning_vs_frozen"}
    for e in s["edges"].values():
        t = e["total_usd"]
        assert t["low"] <= t["estimate"] <= t["high"] and t["level"] == 0.95
    tried = [st for st in s["steps"] if st["status"] != "failed"]
    assert s["dsr"]["trials"] == max(1, len(tried)) and 0.0 <= s["dsr"]["dsr"] <= 1.0
    assert all(v.split(":")[0] in ("edge", "no edge", "worse") for v in s["verdicts"].values())
    html = (full_run / "report.html").read_text()
    assert html.count("<img ") == 3 and "Release timeline" in html and "Rolling edge" in html
    assert "learning_vs_frozen" in html


def test_a_paused_run_resumes_to_the_same_result(
    full_run: Path, settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "paused"
    args = ["evaluate", *SIM, "--retrain-every", "1d", "--out", str(out), "--no-progress"]
    proc = _cli(settings, *args, "--max-steps", "1")
    assert proc.exit_code == 0, proc.output[-3000:]
    assert "paused after 1 retrain steps" in proc.output
    assert len(json.loads((out / "checkpoint.json").read_text())["steps"]) == 1
    assert not (out / "summary.json").exists()
    other = _cli(
        settings, "evaluate", *SIM[:-1], "8", "--out", str(out), "--resume", "--no-progress"
    )
    assert (
        other.exit_code != 0
        and "other options than the checkpoint's (seed: 7 then, 8 now)" in other.output
    )
    # a release published after the last checkpoint (a run killed mid-step) is dropped
    manifests = out / "store" / "models" / "manifest"
    (manifests / "2.json").write_bytes((manifests / "1.json").read_bytes())
    (manifests / "latest.json").write_bytes((manifests / "1.json").read_bytes())
    proc = _cli(settings, *args, "--resume")
    assert proc.exit_code == 0, proc.output[-3000:]
    assert not (manifests / "2.json").exists()
    resumed, full = _summary(out), _summary(full_run)
    assert resumed["arms"] == full["arms"]
    assert resumed["edges"] == full["edges"]
    assert [(st["cut_s"], st["status"], st["sequence"]) for st in resumed["steps"]] == [
        (st["cut_s"], st["status"], st["sequence"]) for st in full["steps"]
    ]


def test_a_release_is_evaluated_on_real_eurusd_bars_as_6e_without_retraining(
    full_run: Path, settings: Settings, tmp_path: Path
) -> None:
    from backtesting.test import EURUSD

    data = tmp_path / "eurusd.csv"
    bars = EURUSD.iloc[:2000]  # four months of hourly bars
    bars.assign(symbol="6E").rename_axis("timestamp").to_csv(data)
    release = _summary(full_run)["steps"][0]["release"]
    store = settings.model_copy(update={"store_dir": str(full_run / "store")})
    out = tmp_path / "fx"
    base = ["evaluate", "--data", str(data), "--symbols", "6E", "--bar-ts", "open", "--out"]
    refused = _cli(store, *base, str(tmp_path / "refused"), "--release", release)
    assert refused.exit_code != 0 and "bars are 1 hour long" in refused.output
    proc = _cli(store, *base, str(out), "--release", release, "--allow-long-bars", "--no-progress")
    assert proc.exit_code == 0, proc.output[-3000:]
    s = _summary(out)
    assert set(s["arms"]) == {"release", "rules"} and set(s["edges"]) == {"release_vs_rules"}
    assert s["run"]["bars"] == len(bars) and s["steps"][0]["release"] == release
    assert s["arms"]["rules"]["6E"]["ALL"]["trades"] > 0
    assert not (out / "training").exists()  # nothing was trained
