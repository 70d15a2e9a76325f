"""The evaluation's outputs: `summary.json` and `report.html` (inline PNG plots).

Plots: the equity of every arm over the hours of the walk with the retrain steps
marked, the learning arm's edge over each baseline (cumulative and over a rolling
day), and the release timeline. Tables: metrics per arm, symbol and strategy, the
edges with their bootstrap intervals, the DSR and each retrain step.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from training.evaluate.loop import FROZEN, LEARNING, RELEASE, RULES, Walked
from training.evaluate.metrics import (
    ALL,
    arm_metrics,
    dsr_summary,
    edge,
    hourly_pnl,
    load_trades,
)

__all__ = ["build_summary", "write_html", "write_report"]

_STATUS_COLOR = {"released": "#2ca02c", "refused": "#7f7f7f", "failed": "#d62728"}
_ARM_COLOR = {LEARNING: "#1f77b4", RELEASE: "#1f77b4", RULES: "#ff7f0e", FROZEN: "#9467bd"}
ROLLING_HOURS = 24


def _subject(walked: Walked) -> str:
    return walked.options.arms[0]  # the arm measured against the others


def build_summary(walked: Walked) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Return the JSON summary and each arm's hourly PnL."""
    hours = [int(h) for h in walked.finish.get("hours", [])]
    arms_dir = walked.out / "arms"
    arms = walked.options.arms
    trades = {a: load_trades(arms_dir, a) for a in arms}
    hourly = {a: hourly_pnl(trades[a], hours) for a in arms}
    subject = _subject(walked)
    seed = walked.options.seed
    edges = {
        f"{subject}_vs_{base}": edge(hourly[subject], hourly[base], seed=seed)
        for base in arms
        if base != subject
    }
    ck = walked.checkpoint
    cuts = [s.cut_s for s in ck.tried] or [int(ck.first_ts_s or 0)]
    summary: dict[str, Any] = {
        "run": {
            **walked.options.defining(),
            "bars": walked.finish.get("processed"),
            "hours_with_bars": len(hours),
            "first_bar": _iso(hours[0] * 3600) if hours else None,
            "last_bar": _iso(hours[-1] * 3600 + 3599) if hours else None,
            "elapsed_s": round(walked.elapsed_s, 1),
        },
        "arms": {a: arm_metrics(trades[a], hours) for a in arms},
        "edges": edges,
        "dsr": dsr_summary(hourly[subject], hours, cuts),
        "steps": [asdict(s) for s in ck.steps],
        "releases": len(ck.releases),
        "verdicts": {name: _verdict(e) for name, e in edges.items()},
    }
    return summary, hourly


def _iso(ts_s: int) -> str:
    return dt.datetime.fromtimestamp(ts_s, dt.UTC).isoformat()


def _verdict(e: dict[str, Any]) -> str:
    total = e["total_usd"]
    level = f"{total['level']:.0%}"
    if total["low"] > 0:
        return f"edge: total {total['estimate']:,.0f} USD, {level} CI above 0"
    if total["high"] < 0:
        return f"worse: total {total['estimate']:,.0f} USD, {level} CI below 0"
    return f"no edge: total {total['estimate']:,.0f} USD, {level} CI includes 0"


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(walked: Walked, hourly: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = np.asarray(walked.finish.get("hours", []), dtype=np.int64)
    xs = (hours * 3600).astype("datetime64[s]")
    steps = walked.checkpoint.steps
    subject = _subject(walked)
    out = []
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=90)
    for arm, pnl in hourly.items():
        style = "--" if arm == FROZEN else "-"  # often on top of the learning arm
        ax.plot(xs, np.cumsum(pnl), style, label=arm, color=_ARM_COLOR.get(arm), linewidth=1.3)
    for s in steps:
        when = np.datetime64(s.cut_s, "s")
        ax.axvline(when, color=_STATUS_COLOR[s.status], alpha=0.25)  # type: ignore[arg-type]
    ax.axhline(0, color="grey", linewidth=0.7)
    ax.set_ylabel("cumulative PnL (USD)")
    ax.set_title("Equity of the arms (vertical lines: retrain steps; green = released)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    out.append(("Equity", _png(fig)))
    plt.close(fig)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), dpi=90, sharex=True)
    for arm, pnl in hourly.items():
        if arm == subject:
            continue
        diff = hourly[subject] - pnl
        top.plot(xs, np.cumsum(diff), label=f"{subject} - {arm}", color=_ARM_COLOR.get(arm))
        window = np.convolve(diff, np.ones(ROLLING_HOURS), mode="full")[: len(diff)]
        bottom.plot(xs, window, label=f"{subject} - {arm}", color=_ARM_COLOR.get(arm))
    top.set_ylabel("cumulative edge (USD)")
    bottom.set_ylabel(f"edge over the last {ROLLING_HOURS} h")
    for a in (top, bottom):
        a.axhline(0, color="grey", linewidth=0.7)
        a.grid(alpha=0.3)
        a.legend()
    top.set_title("Rolling edge")
    fig.autofmt_xdate()
    fig.tight_layout()
    out.append(("Rolling edge", _png(fig)))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(11, 2.2), dpi=90)
    lanes = {"released": 2, "refused": 1, "failed": 0}
    for s in steps:
        x = np.datetime64(s.cut_s, "s")
        ax.scatter([x], [lanes[s.status]], color=_STATUS_COLOR[s.status], s=30)
        if s.release:
            ax.annotate(s.release.split("-")[0], (x, 2), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=7)  # fmt: skip
    ax.set_yticks(list(lanes.values()), list(lanes))
    ax.set_ylim(-0.5, 2.8)
    if len(xs):
        ax.set_xlim(xs[0], xs[-1])
    ax.set_title("Release timeline (one point per retrain step)")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    out.append(("Release timeline", _png(fig)))
    plt.close(fig)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 100 else f"{v:,.0f}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_html(summary: dict[str, Any], plots: list[tuple[str, str]], path: Path) -> Path:
    """Write the HTML report: verdicts, plots and tables."""
    cols = ["trades", "pnl_usd", "sharpe", "sortino", "max_drawdown_usd", "avg_r", "hit_rate",
            "turnover_contracts_per_day"]  # fmt: skip
    metric_rows = []
    for arm, by_symbol in summary["arms"].items():
        for symbol, by_strategy in by_symbol.items():
            for strategy, m in by_strategy.items():
                if (symbol == ALL and strategy == ALL) or symbol != ALL:
                    metric_rows.append([arm, symbol, strategy, *(m[c] for c in cols)])
    edge_rows = []
    for name, e in summary["edges"].items():
        t, m = e["total_usd"], e["mean_usd_per_hour"]
        edge_rows.append([name, t["estimate"], t["low"], t["high"], m["estimate"], m["low"],
                          m["high"], t["level"], t["method"], summary["verdicts"][name]])  # fmt: skip
    dsr = summary["dsr"]
    step_rows = [
        [s["number"], _iso(s["cut_s"]), s["status"], s["release"], s["gate_p_value"],
         ",".join(s["swapped"]), round(s["train_s"], 1), s["message"]]
        for s in summary["steps"]
    ]  # fmt: skip
    run = summary["run"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>tradeloop evaluate</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;font-size:12px;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}</style></head><body>",
        "<h1>tradeloop evaluate</h1>",
        f"<p>{html.escape(str(run['feed']))} · symbols {html.escape(','.join(run['symbols']))} · "
        f"seed {run['seed']} · {run['bars']} bars, {run['hours_with_bars']} hours "
        f"({html.escape(str(run['first_bar']))} to {html.escape(str(run['last_bar']))}) · "
        f"retrain every {run['retrain_every_s']} s · profile {html.escape(run['profile'])} · "
        f"{summary['releases']} releases in {len(summary['steps'])} steps · "
        f"{run['elapsed_s']} s</p>",
        "<h2>Verdicts</h2><ul>",
        *(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in summary["verdicts"].items()),
        "</ul>",
        *(f"<h2>{t}</h2><img alt='{t}' src='data:image/png;base64,{b}'/>" for t, b in plots),
        "<h2>Edges (hourly PnL differences, bootstrap CI)</h2>",
        _table(
            [
                "edge",
                "total USD",
                "low",
                "high",
                "mean/h",
                "low",
                "high",
                "level",
                "method",
                "verdict",
            ],
            edge_rows,
        ),
        "<h2>Deflated Sharpe ratio</h2>",
        _table(list(dsr), [list(dsr.values())]),
        "<h2>Metrics per arm, symbol and strategy</h2>",
        _table(["arm", "symbol", "strategy", *cols], metric_rows),
        "<h2>Retrain steps</h2>",
        _table(
            ["step", "cut", "status", "release", "gate p", "swapped", "train s", "message"],
            step_rows,
        ),
        "</body></html>",
    ]
    path.write_text("\n".join(parts))
    return path


def write_report(walked: Walked) -> dict[str, Any]:
    """Write `summary.json` and `report.html` into the run's directory; return the summary."""
    summary, hourly = build_summary(walked)
    (walked.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    write_html(summary, _plots(walked, hourly), walked.out / "report.html")
    return summary
