"""Per-arm results from the walk's trades: metrics per symbol and strategy, edges, the DSR.

- Daily series are the PnL of the trades that closed on each UTC day that had
  bars (days without a trade count as 0); Sharpe and Sortino are of those, x√252.
- Hourly series (the same over the hours that had bars) carry the edge: the
  learning arm's hourly PnL minus a baseline's, paired by hour, with a BCa
  bootstrap interval of its mean (and of the total, the mean x hours).
- The DSR deflates the learning arm's hourly Sharpe ratio for the releases tried:
  N = the retrain steps that gated a candidate. The variance of the trials' Sharpe
  ratios is taken over the hourly Sharpe ratios of the periods each step served,
  or, when fewer than two periods span two hours (steps every 30 minutes), it is
  the variance of the Sharpe ratio estimate itself (the PSR's denominator / (T-1)).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.evaluate.stats import (
    bootstrap_ci,
    deflated_sharpe,
    max_drawdown,
    moments,
    sharpe,
    sortino,
)

__all__ = [
    "ALL",
    "arm_metrics",
    "dsr_summary",
    "edge",
    "group_metrics",
    "hourly_pnl",
    "load_trades",
]

ALL = "ALL"
TRADING_DAYS = 252.0
_COLUMNS = ["symbol", "strategy", "exit_ts", "pnl_usd", "r_multiple", "quantity"]


def load_trades(arms_dir: Path, arm: str) -> pd.DataFrame:
    """Read an arm's trades (every part the walk wrote), ordered by exit; add `exit_s`."""
    parts = sorted((arms_dir / arm / "trades").glob("part-*.parquet"))
    frames = [pd.read_parquet(p, columns=_COLUMNS) for p in parts]
    frames = [f for f in frames if len(f)]
    if not frames:
        empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in _COLUMNS})
        empty["symbol"] = empty["strategy"] = pd.Series(dtype="object")
        empty["exit_s"] = pd.Series(dtype="int64")
        return empty
    trades = pd.concat(frames, ignore_index=True)
    ts = pd.to_datetime(trades["exit_ts"], utc=True)
    trades["exit_s"] = (ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return trades.sort_values("exit_s", kind="stable").reset_index(drop=True)


def _series(trades: pd.DataFrame, keys: np.ndarray, period_s: int) -> np.ndarray:
    """Return the PnL per period (`exit_s // period_s`) over `keys`, 0 where none closed."""
    if not len(keys):
        return np.zeros(0)
    sums = trades.groupby(trades["exit_s"].to_numpy() // period_s)["pnl_usd"].sum()
    return sums.reindex(keys, fill_value=0.0).to_numpy(dtype=np.float64)


def hourly_pnl(trades: pd.DataFrame, hours: Sequence[int]) -> np.ndarray:
    """Return the PnL per hour that had bars (trades closing in another hour are folded in)."""
    h = np.asarray(hours, dtype=np.int64)
    if not len(h):
        return np.zeros(0)
    # an exit outside the listed hours (a close at the last bar's time) goes to the hour before
    idx = np.searchsorted(h, trades["exit_s"].to_numpy() // 3600, side="right") - 1
    out = np.zeros(len(h))
    np.add.at(out, np.clip(idx, 0, len(h) - 1), trades["pnl_usd"].to_numpy(dtype=np.float64))
    return out


def group_metrics(trades: pd.DataFrame, days: np.ndarray) -> dict[str, float]:
    """Return PnL, Sharpe, Sortino, max drawdown, avg R, hit rate and turnover of trades."""
    daily = _series(trades, days, 86_400)
    pnl = trades["pnl_usd"].to_numpy(dtype=np.float64)
    n_days = max(1, len(days))
    return {
        "trades": len(trades),
        "pnl_usd": float(pnl.sum()),
        "sharpe": sharpe(daily, TRADING_DAYS),
        "sortino": sortino(daily, TRADING_DAYS),
        "max_drawdown_usd": max_drawdown(pnl),
        "avg_r": float(trades["r_multiple"].mean()) if len(trades) else 0.0,
        "hit_rate": float((pnl > 0).mean()) if len(trades) else 0.0,
        # contracts bought and sold (entry and exit) per day with bars
        "turnover_contracts_per_day": float(2.0 * trades["quantity"].sum() / n_days),
    }


def arm_metrics(trades: pd.DataFrame, hours: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Return metrics per symbol and strategy (`ALL` rows for totals) of one arm."""
    days = np.unique(np.asarray(hours, dtype=np.int64) // 24)
    out: dict[str, dict[str, Any]] = {ALL: {ALL: group_metrics(trades, days)}}
    for symbol, by_symbol in trades.groupby("symbol", sort=True):
        row = {ALL: group_metrics(by_symbol, days)}
        for strategy, group in by_symbol.groupby("strategy", sort=True):
            row[str(strategy)] = group_metrics(group, days)
        out[str(symbol)] = row
    return out


def edge(
    learning: np.ndarray, baseline: np.ndarray, *, level: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Return the hourly edge (learning - baseline): mean and total with BCa intervals."""
    diff = np.asarray(learning, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    n = len(diff)
    if n < 2 or not np.any(diff != diff[0]):
        est = float(diff.mean()) if n else 0.0
        flat = {"estimate": est, "low": est, "high": est, "level": level, "method": "none", "n": n}
        return {"mean_usd_per_hour": flat, "total_usd": {**flat, **_scaled(flat, n)}}
    ci = bootstrap_ci(diff, level=level, seed=seed).to_dict()
    return {"mean_usd_per_hour": ci, "total_usd": {**ci, **_scaled(ci, n)}}


def _scaled(ci: Mapping[str, Any], n: int) -> dict[str, float]:
    return {k: float(ci[k]) * n for k in ("estimate", "low", "high")}


def dsr_summary(
    hourly: np.ndarray, hours: Sequence[int], cuts_s: Sequence[int]
) -> dict[str, float | int | str]:
    """Return the DSR of the hourly Sharpe ratio for len(cuts) releases tried."""
    x = np.asarray(hourly, dtype=np.float64)
    h = np.asarray(hours, dtype=np.int64)
    n_trials = max(1, len(cuts_s))
    sr = sharpe(x)
    skew, kurt = moments(x)
    bounds = [int(c) // 3600 for c in cuts_s] + [int(h[-1]) + 1 if len(h) else 0]
    trial_sr = [
        sharpe(x[(h >= lo) & (h < hi)])
        for lo, hi in itertools.pairwise(bounds)
        if np.count_nonzero((h >= lo) & (h < hi)) >= 2
    ]
    source = "segments"
    var_trials = float(np.var(trial_sr, ddof=1)) if len(trial_sr) >= 2 else 0.0
    if len(trial_sr) < 2 and n_trials > 1 and len(x) > 1:
        # steps under two hours apart: the variance of the Sharpe ratio estimate itself
        source = "estimator"
        var_trials = max(0.0, 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr) / (len(x) - 1)
    dsr, sr0 = deflated_sharpe(sr, len(x), skew, kurt, n_trials, var_trials)
    return {
        "sharpe_per_hour": sr,
        "hours": len(x),
        "skew": skew,
        "kurtosis": kurt,
        "trials": n_trials,
        "trial_sharpe_variance": var_trials,
        "trial_variance_from": source,
        "expected_max_sharpe": sr0,
        "dsr": dsr,
    }
