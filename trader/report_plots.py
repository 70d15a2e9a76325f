"""The report's plots: matplotlib (Agg) figures rendered to base64 PNG for inline HTML."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any

from features.trade_stats import drawdown_curve

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "plot_calibration",
    "plot_drawdown",
    "plot_equity",
    "plot_hours",
    "plot_r",
    "strategy_order",
]


def strategy_order(name: str) -> tuple[int, str]:
    digits = "".join(ch for ch in name if ch.isdigit())
    return (int(digits) if digits else 10**6, name)


# Models --------------------------------------------------------------------------


def _figure(width: float = 9.0, height: float = 3.6, ncols: int = 1) -> tuple[Figure, Any]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes if ncols > 1 else axes[0]


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_equity(df: pd.DataFrame) -> str:
    fig, ax = _figure()
    ax.plot(df["exit_ts"], df["pnl_usd"].cumsum(), label="all", color="black", lw=1.8)
    for sym, g in df.groupby("symbol"):
        if df["symbol"].nunique() > 1:
            ax.plot(g["exit_ts"], g["pnl_usd"].cumsum(), label=str(sym), lw=1.0)
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_ylabel("cumulative PnL ($)")
    ax.set_title("Equity curve")
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    return _png(fig)


def plot_drawdown(df: pd.DataFrame) -> str:
    fig, ax = _figure(height=2.8)
    dd = -drawdown_curve(df["pnl_usd"].to_numpy())
    ax.fill_between(df["exit_ts"], dd, 0, color="tab:red", alpha=0.4, step="post")
    ax.plot(df["exit_ts"], dd, color="tab:red", lw=0.8, drawstyle="steps-post")
    ax.set_ylabel("drawdown ($)")
    ax.set_title(f"Drawdown (max {dd.min():,.0f} $)")
    fig.autofmt_xdate()
    return _png(fig)


def plot_r(df: pd.DataFrame) -> str:
    strategies = sorted(df["strategy"].unique(), key=strategy_order)
    fig, axes = _figure(height=3.0, ncols=max(1, len(strategies)))
    axes = axes if len(strategies) > 1 else [axes]
    lo, hi = float(df["r_multiple"].min()), float(df["r_multiple"].max())
    edges = [lo + (hi - lo) * i / 20 for i in range(21)] if hi > lo else 10
    for ax, strat in zip(axes, strategies, strict=True):
        r = df.loc[df["strategy"] == strat, "r_multiple"]
        ax.hist(r, bins=edges, color="tab:blue", alpha=0.8)
        ax.axvline(0, color="grey", lw=0.6)
        ax.axvline(float(r.mean()), color="tab:orange", lw=1.2, label=f"mean {r.mean():.2f}R")
        ax.set_title(f"{strat} (n={len(r)})")
        ax.set_xlabel("R-multiple")
        ax.legend(fontsize=7)
    return _png(fig)


def plot_hours(df: pd.DataFrame) -> str:
    import pandas as pd

    fig, ax = _figure(height=3.0)
    table = pd.crosstab(df["entry_ts"].dt.hour, df["strategy"]).reindex(range(24), fill_value=0)
    bottom = None
    for strat in sorted(table.columns, key=strategy_order):
        ax.bar(table.index, table[strat], bottom=bottom, label=strat)
        bottom = table[strat] if bottom is None else bottom + table[strat]
    ax.set_xticks(range(0, 24, 2))
    ax.set_xlabel(f"entry hour ({df['entry_ts'].dt.tz})")
    ax.set_ylabel("trades")
    ax.set_title("Trades per hour")
    ax.legend(fontsize=8)
    return _png(fig)


def plot_calibration(curves: list[tuple[str, list[dict[str, float]], str, str]]) -> str:
    fig, axes = _figure(width=4.2 * len(curves), height=3.6, ncols=len(curves))
    axes = axes if len(curves) > 1 else [axes]
    for ax, (title, pts, xlabel, ylabel) in zip(axes, curves, strict=True):
        xs = [p["pred"] for p in pts]
        ys = [p["obs"] for p in pts]
        lo, hi = min([*xs, *ys, 0.0]), max([*xs, *ys, 1.0 if "prob" in xlabel else 0.0])
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="perfect")
        sizes = [20 + 80 * p.get("n", 1) / max(q.get("n", 1) for q in pts) for p in pts]
        ax.plot(xs, ys, color="tab:blue", lw=1.0)
        ax.scatter(xs, ys, s=sizes, color="tab:blue", zorder=3, label="bins")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    return _png(fig)
