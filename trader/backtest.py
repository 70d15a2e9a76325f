"""Backtest outputs: the summary table, trades as parquet, the equity curve as PNG."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from infra.contracts import Event, TradeOutcome

__all__ = ["TradeRecorder", "print_summary", "write_equity_png", "write_summary", "write_trades"]

TRADE_COLUMNS = (
    "event_id",
    "signal_id",
    "symbol",
    "strategy",
    "side",
    "entry_ts",
    "entry_price",
    "exit_ts",
    "exit_price",
    "quantity",
    "pnl_usd",
    "r_multiple",
    "mae_r",
    "mfe_r",
    "commission_usd",
    "exit_reason",
    "source",
    "run_id",
)


class TradeRecorder:
    """An engine sink that keeps the real (not counterfactual) trades."""

    def __init__(self) -> None:
        self.trades: list[TradeOutcome] = []

    def __call__(self, topic: str, event: Event) -> None:
        if isinstance(event, TradeOutcome) and not event.counterfactual:
            self.trades.append(event)


def write_trades(trades: list[TradeOutcome], path: Path) -> Path:
    """Write the trades as parquet (one row per trade, columns of TRADE_COLUMNS)."""
    rows = [{c: getattr(t, c) for c in TRADE_COLUMNS} for t in trades]
    table = (
        pa.Table.from_pylist(rows)
        if rows
        else pa.table({c: pa.array([], pa.string()) for c in TRADE_COLUMNS})
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def write_equity_png(equity: list[tuple[int, float]], path: Path, title: str) -> Path:
    """Draw cumulative realised PnL over time (matplotlib, Agg backend, imported lazily)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    if equity:
        xs = np.array([t for t, _ in equity], dtype="datetime64[s]")
        ys = [v for _, v in equity]
        ax.plot(xs, ys, linewidth=1.2, color="#1f77b4")
        ax.fill_between(xs, ys, 0, alpha=0.15, color="#1f77b4")
    else:
        ax.text(0.5, 0.5, "no trades", ha="center", va="center", transform=ax.transAxes)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_title(title)
    ax.set_ylabel("realised PnL (USD)")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def print_summary(summary: Mapping[str, Mapping[str, Mapping[str, Any]]], console: Any) -> None:
    """Print one row per symbol and strategy (and the symbol total) with rich."""
    from rich.table import Table

    table = Table(title="backtest: real trades per symbol and strategy (counterfactuals at 1 lot)")
    for col in (
        "symbol",
        "strategy",
        "signals",
        "taken",
        "trades",
        "win rate",
        "avg R",
        "PnL $",
        "Sharpe/trade",
        "max DD $",
        "cf trades",
        "cf avg R",
    ):
        table.add_column(col, justify="right" if col not in ("symbol", "strategy") else "left")

    def fmt(v: Any, spec: str = "") -> str:
        return "-" if v is None else format(v, spec)

    for symbol, groups in summary.items():
        for strategy, g in groups.items():
            table.add_row(
                symbol,
                strategy,
                str(g["signals"]),
                str(g["taken"]),
                str(g["trades"]),
                fmt(g["win_rate"], ".1%"),
                fmt(g["avg_r"], ".3f"),
                fmt(g["pnl_usd"], ",.0f"),
                fmt(g["sharpe"], ".3f"),
                fmt(g["max_drawdown_usd"], ",.0f"),
                str(g["counterfactual_trades"]),
                fmt(g["counterfactual_avg_r"], ".3f"),
                style="bold" if strategy == "ALL" else None,
            )
    console.print(table)


def write_summary(summary: Mapping[str, Any], path: Path) -> Path:
    """Write the run summary as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str))
    return path
