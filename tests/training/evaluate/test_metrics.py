"""Per-arm metrics, hourly series, edges and the DSR summary on hand-made trades."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.evaluate.metrics import (
    arm_metrics,
    dsr_summary,
    edge,
    group_metrics,
    hourly_pnl,
    load_trades,
)

H0 = 473_000  # an hour index (epoch s // 3600)


def _trades(rows: list[tuple[str, str, int, float, float, int]]) -> pd.DataFrame:
    cols = ["symbol", "strategy", "exit_s", "pnl_usd", "r_multiple", "quantity"]
    return pd.DataFrame(rows, columns=cols)


def test_trades_are_read_from_every_part_in_exit_order(tmp_path: Path) -> None:
    part = tmp_path / "learning" / "trades"
    part.mkdir(parents=True)
    for i, (exit_s, pnl) in enumerate([(H0 * 3600 + 900, 10.0), (H0 * 3600 + 60, -5.0)]):
        table = pa.table(
            {
                "symbol": ["ES"],
                "strategy": ["S2"],
                "exit_ts": pa.array([exit_s * 1_000_000], pa.timestamp("us", tz="UTC")),
                "pnl_usd": [pnl],
                "r_multiple": [pnl / 10],
                "quantity": [2],
            }
        )
        pq.write_table(table, part / f"part-{i:05d}.parquet")
    trades = load_trades(tmp_path, "learning")
    assert trades["exit_s"].tolist() == [H0 * 3600 + 60, H0 * 3600 + 900]
    assert trades["pnl_usd"].tolist() == [-5.0, 10.0]
    assert load_trades(tmp_path, "rules").empty


def test_group_metrics_on_known_trades() -> None:
    day = 86_400
    trades = _trades(
        [
            ("ES", "S2", 10 * day + 100, 100.0, 1.0, 2),
            ("ES", "S6", 10 * day + 200, -50.0, -0.5, 1),
            ("NQ", "S2", 12 * day + 100, 30.0, 0.3, 3),
        ]
    )
    m = group_metrics(trades, np.array([10, 11, 12]))
    daily = np.array([50.0, 0.0, 30.0])
    assert m["trades"] == 3 and m["pnl_usd"] == 80.0
    assert m["sharpe"] == pytest.approx(daily.mean() / daily.std(ddof=1) * np.sqrt(252))
    assert m["max_drawdown_usd"] == 50.0
    assert m["avg_r"] == pytest.approx(0.8 / 3)
    assert m["hit_rate"] == pytest.approx(2 / 3)
    assert m["turnover_contracts_per_day"] == pytest.approx(2 * 6 / 3)
    hours = [10 * 24, 11 * 24, 12 * 24]
    by = arm_metrics(trades, hours)
    assert set(by) == {"ALL", "ES", "NQ"}
    assert set(by["ES"]) == {"ALL", "S2", "S6"}
    assert by["ES"]["ALL"]["pnl_usd"] == 50.0 and by["NQ"]["S2"]["trades"] == 1


def test_hourly_pnl_folds_each_trade_into_the_hour_it_closed() -> None:
    hours = [H0, H0 + 1, H0 + 5]
    trades = _trades(
        [
            ("ES", "S2", H0 * 3600 + 10, 1.0, 0.1, 1),
            ("ES", "S2", (H0 + 1) * 3600 + 10, 2.0, 0.2, 1),
            ("ES", "S2", (H0 + 3) * 3600, 4.0, 0.4, 1),  # a gap hour: the hour before
            ("ES", "S2", (H0 + 5) * 3600 + 3599, 8.0, 0.8, 1),
        ]
    )
    assert hourly_pnl(trades, hours).tolist() == [1.0, 6.0, 8.0]
    assert hourly_pnl(trades, []).size == 0


def test_edge_interval_covers_the_mean_difference_and_scales_to_the_total() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0, 10, 300)
    better = base + 5 + rng.normal(0, 1, 300)
    e = edge(better, base, seed=1)
    m, t = e["mean_usd_per_hour"], e["total_usd"]
    assert m["low"] < m["estimate"] < m["high"] and m["low"] > 4
    assert t["estimate"] == pytest.approx(m["estimate"] * 300)
    assert t["low"] == pytest.approx(m["low"] * 300)
    same = edge(base, base)
    assert same["total_usd"]["estimate"] == 0.0 and same["mean_usd_per_hour"]["method"] == "none"


def test_dsr_summary_counts_trials_and_their_sharpe_variance() -> None:
    rng = np.random.default_rng(4)
    hours = list(range(H0, H0 + 90))
    x = np.concatenate([rng.normal(1, 1, 30), rng.normal(-1, 1, 30), rng.normal(0, 1, 30)])
    cuts = [H0 * 3600, (H0 + 30) * 3600, (H0 + 60) * 3600]
    s = dsr_summary(x, hours, cuts)
    assert s["trials"] == 3 and s["hours"] == 90 and s["trial_variance_from"] == "segments"
    assert s["trial_sharpe_variance"] > 0.5  # segments with SR near +1, -1 and 0
    assert s["expected_max_sharpe"] > 0
    assert 0.0 <= s["dsr"] < 0.5
    one = dsr_summary(x, hours, cuts[:1])
    assert one["trials"] == 1 and one["expected_max_sharpe"] == 0.0


def test_steps_under_two_hours_apart_deflate_by_the_sharpe_estimates_own_variance() -> None:
    rng = np.random.default_rng(8)
    hours = list(range(H0, H0 + 48))
    x = rng.normal(0.3, 1, 48)
    cuts = [(H0 + 40) * 3600 + k * 1800 for k in range(10)]  # every 30 minutes
    s = dsr_summary(x, hours, cuts)
    sr = s["sharpe_per_hour"]
    want = (1 - s["skew"] * sr + (s["kurtosis"] - 1) / 4 * sr * sr) / 47
    assert s["trial_variance_from"] == "estimator"
    assert s["trial_sharpe_variance"] == pytest.approx(want)
    assert s["expected_max_sharpe"] > 0 and s["trials"] == 10
