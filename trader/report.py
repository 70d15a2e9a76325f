"""Self-contained HTML reports with PNG plots: backtests and the live day.

`write_backtest_report` turns a frame of trades (one row per `TradeOutcome`) into one
HTML file with its plots embedded as base64 PNGs, so the file opens alone:
equity curve, drawdown, R-multiple distribution per strategy, trades per hour and,
for the serving models, their metrics and calibration. `tradeloop report --date D`
builds the same report from the event lake and the latest manifest.

matplotlib (Agg) and pandas are imported lazily; this module never imports faust,
feast, torch or sklearn.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
import numpy as np

from features.trade_stats import TradeSummary, sharpe_ratio, trade_stats
from infra.contracts import LATEST_MANIFEST_KEY
from trader.report_plots import (
    plot_calibration,
    plot_drawdown,
    plot_equity,
    plot_hours,
    plot_r,
)

if TYPE_CHECKING:
    import pandas as pd

    from infra.settings import Settings

__all__ = [
    "REQUIRED_COLUMNS",
    "ReportInputError",
    "calibration_bins",
    "load_day",
    "report",
    "summary_stats",
    "write_backtest_report",
]

#: Columns every trades frame must have (names of `TradeOutcome` fields).
REQUIRED_COLUMNS: tuple[str, ...] = ("strategy", "pnl_usd", "r_multiple", "exit_ts")
#: Artifact metric keys holding a reliability curve: `calib_pred_{i}` / `calib_obs_{i}`.
CALIB_KEY = re.compile(r"^calib_(pred|obs)_(\d+)$")
MANIFEST_KEY = LATEST_MANIFEST_KEY


class ReportInputError(ValueError):
    """Raise when the trades frame lacks a column or holds values a report cannot use."""


# Numbers -------------------------------------------------------------------------


def _prepare(trades: pd.DataFrame, tz: str) -> pd.DataFrame:
    import pandas as pd

    missing = [c for c in REQUIRED_COLUMNS if c not in trades.columns]
    if missing:
        raise ReportInputError(
            f"trades frame lacks column(s) {', '.join(missing)}; "
            f"expected TradeOutcome fields, at least {', '.join(REQUIRED_COLUMNS)}"
        )
    df = trades.copy()
    if "counterfactual" in df.columns:
        df = df[~df["counterfactual"].fillna(False).astype(bool)]
    if "event_id" in df.columns:
        df = df.drop_duplicates("event_id")
    for col in ("exit_ts", "entry_ts"):
        if col in df.columns:
            df[col] = pd.to_datetime(df[col], utc=True).dt.tz_convert(tz)
    if "entry_ts" not in df.columns:
        df["entry_ts"] = df["exit_ts"]
    if "symbol" not in df.columns:
        df["symbol"] = "?"
    for col in ("pnl_usd", "r_multiple"):
        df[col] = pd.to_numeric(df[col], errors="raise").astype(float)
        bad = int((~np.isfinite(df[col].to_numpy())).sum())
        if bad:
            raise ReportInputError(f"trades frame column {col} holds {bad} non-finite value(s)")
    df["strategy"] = df["strategy"].astype(str)
    df["symbol"] = df["symbol"].astype(str)
    return df.sort_values("exit_ts", kind="stable").reset_index(drop=True)


def _stats(df: pd.DataFrame) -> TradeSummary:
    return trade_stats(df["pnl_usd"].to_numpy(), df["r_multiple"].to_numpy())


def summary_stats(df: pd.DataFrame) -> dict[str, Any]:
    """Return headline figures of prepared trades: PnL, win rate, R, drawdown, Sharpe.

    The drawdown is negative (USD below the peak); the Sharpe ratio is of daily PnL,
    annualised with 252 trading days.
    """
    n = len(df)
    if n == 0:
        return {"trades": 0}
    s = _stats(df)
    daily = df.groupby(df["exit_ts"].dt.date)["pnl_usd"].sum()
    sharpe = sharpe_ratio(daily.to_numpy())
    out: dict[str, Any] = {
        "trades": n,
        "wins": s.wins,
        "win_rate": s.win_rate,
        "pnl_usd": s.pnl_usd,
        "avg_r": s.avg_r,
        "avg_win_usd": s.avg_win_usd,
        "avg_loss_usd": s.avg_loss_usd,
        "profit_factor": s.profit_factor,
        "max_drawdown_usd": 0.0 - s.max_drawdown_usd,
        "days": len(daily),
        "sharpe_daily_annualized": None if sharpe is None else sharpe * math.sqrt(252),
        "first_exit": df["exit_ts"].iloc[0].isoformat(),
        "last_exit": df["exit_ts"].iloc[-1].isoformat(),
    }
    if "commission_usd" in df.columns:
        out["commission_usd"] = float(df["commission_usd"].fillna(0).sum())
    return out


def _group_table(df: pd.DataFrame, by: list[str]) -> list[dict[str, Any]]:
    rows = []
    for key, g in df.groupby(by, sort=True):
        keys = key if isinstance(key, tuple) else (key,)
        s = _stats(g)
        rows.append(
            {
                **dict(zip(by, keys, strict=True)),
                "trades": s.trades,
                "win_rate": s.win_rate,
                "avg_r": s.avg_r,
                "pnl_usd": s.pnl_usd,
                "profit_factor": s.profit_factor,
            }
        )
    return rows


def calibration_bins(
    predicted: pd.Series, observed: pd.Series, bins: int = 10, *, quantile: bool = False
) -> list[dict[str, float]]:
    """Return per-bin mean prediction, mean outcome and count (empty bins left out).

    Probabilities use equal-width bins on [0, 1]; other predictions (`quantile=True`)
    use quantile bins so each holds a similar number of trades.
    """
    import pandas as pd

    frame = pd.DataFrame({"p": predicted.astype(float), "y": observed.astype(float)}).dropna()
    if frame.empty:
        return []
    if quantile:
        k = max(1, min(bins, frame["p"].nunique()))
        cut = (
            pd.qcut(frame["p"], k, duplicates="drop") if k > 1 else pd.Series(0, index=frame.index)
        )
    else:
        cut = pd.cut(
            frame["p"].clip(0, 1), [i / bins for i in range(bins + 1)], include_lowest=True
        )
    out = []
    for _, g in frame.groupby(cut, observed=True):
        if len(g):
            out.append(
                {"pred": float(g["p"].mean()), "obs": float(g["y"].mean()), "n": float(len(g))}
            )
    return out


def _artifacts(models: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Return [{family, version, metrics}] from a manifest dict or {family: metrics}."""
    if not models:
        return []
    if isinstance(models.get("artifacts"), list | tuple):
        return [
            {
                "family": str(a.get("family", "?")),
                "version": str(a.get("version", "")),
                "metrics": dict(a.get("metrics") or {}),
            }
            for a in models["artifacts"]
            if isinstance(a, Mapping)
        ]
    out = []
    for family, value in models.items():
        if isinstance(value, Mapping):
            metrics = value.get("metrics", value)
            out.append(
                {
                    "family": str(family),
                    "version": str(value.get("version", "")),
                    "metrics": dict(metrics),
                }
            )
    return out


def _manifest_curve(metrics: Mapping[str, Any]) -> list[dict[str, float]]:
    pred: dict[int, float] = {}
    obs: dict[int, float] = {}
    for key, value in metrics.items():
        m = CALIB_KEY.match(str(key))
        if m and isinstance(value, int | float):
            (pred if m.group(1) == "pred" else obs)[int(m.group(2))] = float(value)
    return [{"pred": pred[i], "obs": obs[i], "n": 1.0} for i in sorted(pred) if i in obs]


# HTML ----------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f5f5f5}
td:first-child,th:first-child{text-align:left}.muted{color:#777;font-size:12px}
img{max-width:100%;height:auto;display:block;margin:8px 0}.neg{color:#b00}.pos{color:#070}
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        if math.isnan(value):
            return "-"
        return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.2f}"
    return html.escape(str(value))


def _table(rows: list[dict[str, Any]], pct: tuple[str, ...] = ("win_rate",)) -> str:
    if not rows:
        return "<p class='muted'>no rows</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            text = f"{v:.1%}" if c in pct and isinstance(v, float) else _fmt(v)
            cls = " class='neg'" if c == "pnl_usd" and isinstance(v, float) and v < 0 else ""
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _img(b64: str, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{b64}'>"


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "report"


def _models_section(df: pd.DataFrame, models: Mapping[str, Any] | None) -> str:
    parts = ["<h2 id='models'>Serving models</h2>"]
    arts = _artifacts(models)
    if models and isinstance(models.get("release"), str):
        parts.append(
            f"<p>release <b>{html.escape(models['release'])}</b>"
            f" (sequence {_fmt(models.get('sequence'))}, published {_fmt(models.get('ts_event'))})</p>"
        )
        gate = models.get("gate")
        if isinstance(gate, Mapping) and gate.get("decision"):
            reasons = "; ".join(str(r) for r in gate.get("reasons") or ())
            parts.append(
                f"<p>gate: <b>{html.escape(str(gate['decision']))}</b>"
                + (f" ({html.escape(reasons)})" if reasons else "")
                + "</p>"
            )
    if arts:
        for a in arts:
            metrics = {k: v for k, v in a["metrics"].items() if not CALIB_KEY.match(str(k))}
            rows = [{"metric": k, "value": v} for k, v in sorted(metrics.items())]
            parts.append(f"<h3>{html.escape(a['family'])} {html.escape(a['version'])}</h3>")
            parts.append(_table(rows, pct=()))
    else:
        parts.append("<p class='muted'>no model manifest given</p>")
    curves: list[tuple[str, list[dict[str, float]], str, str]] = []
    for a in arts:
        pts = _manifest_curve(a["metrics"])
        if pts:
            curves.append((f"{a['family']} (training holdout)", pts, "predicted", "observed"))
    if "meta_prob" in df.columns and df["meta_prob"].notna().any():
        pts = calibration_bins(df["meta_prob"], (df["pnl_usd"] > 0).astype(float), bins=10)
        if pts:
            curves.append(
                ("meta: P(chosen strategy) vs win rate", pts, "predicted prob", "win rate")
            )
    if "predicted_r" in df.columns and df["predicted_r"].notna().any():
        pts = calibration_bins(df["predicted_r"], df["r_multiple"], bins=8, quantile=True)
        if pts:
            curves.append(("exec: predicted R vs realised R", pts, "predicted R", "realised R"))
    parts.append("<h3 id='calibration'>Calibration</h3>")
    if curves:
        parts.append(_img(plot_calibration(curves), "calibration"))
    else:
        parts.append(
            "<p class='muted'>no calibration data: trades carry no meta_prob/predicted_r and "
            "the manifest no calib_pred_i/calib_obs_i metrics</p>"
        )
    return "\n".join(parts)


def write_backtest_report(
    trades: pd.DataFrame,
    out_dir: str | Path,
    title: str,
    models: dict[str, Any] | None = None,
    *,
    tz: str = "UTC",
    notes: list[str] | None = None,
) -> Path:
    """Write `{out_dir}/{slug(title)}.html`, self-contained, and return its path.

    `trades`: one row per closed trade with `TradeOutcome` columns (at least
    `strategy`, `pnl_usd`, `r_multiple`, `exit_ts`; optional `symbol`, `entry_ts`,
    `counterfactual` (such rows are dropped), `meta_prob`, `predicted_r`).
    `models`: a manifest as a dict (its artifacts' metrics are shown) or
    `{family: {metric: value}}`. Raise `ReportInputError` on a malformed frame.
    """
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportInputError(f"unknown time zone {tz!r}") from None
    df = _prepare(trades, tz)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats = summary_stats(df)
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='muted'>generated {generated}; times in {html.escape(tz)}</p>",
        *(f"<p class='muted'>{html.escape(n)}</p>" for n in notes or []),
        "<h2 id='summary'>Summary</h2>",
        _table([{"figure": k, "value": v} for k, v in stats.items()], pct=()),
    ]
    if len(df):
        body += [
            "<h2 id='equity'>Equity curve</h2>",
            _img(plot_equity(df), "equity curve"),
            "<h2 id='drawdown'>Drawdown</h2>",
            _img(plot_drawdown(df), "drawdown"),
            "<h2 id='r-multiples'>R-multiple distribution per strategy</h2>",
            _img(plot_r(df), "R-multiple distribution"),
            "<h2 id='trades-per-hour'>Trades per hour</h2>",
            _img(plot_hours(df), "trades per hour"),
            "<h2 id='by-strategy'>By symbol and strategy</h2>",
            _table(_group_table(df, ["strategy"])),
            _table(_group_table(df, ["symbol", "strategy"])),
        ]
    else:
        body.append("<p><b>No trades</b> in this period: nothing to plot.</p>")
    body.append(_models_section(df, models))
    doc = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
    path = out / f"{_slug(title)}.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(path)
    return path


# The live day from the lake --------------------------------------------------------


def load_day(
    settings: Settings, day: date
) -> tuple[pd.DataFrame, dict[str, Any] | None, list[str]]:
    """Return the day's outcomes (with the deciding signal's predictions), the manifest, notes.

    Outcomes come from the event lake (`infra.lake.read_topic`), decoded from their
    original JSON (`payload`); `meta_prob`/`predicted_r` are joined from the signal
    each trade links to. The manifest is `models/manifest/latest.json`.
    """
    import pandas as pd

    from infra.contracts import (
        EventDecodeError,
        ModelManifest,
        SignalSnapshot,
        TradeOutcome,
        decode,
    )
    from infra.lake import read_topic
    from infra.objectstore import ObjectNotFoundError, object_store

    notes: list[str] = []
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    rows = []
    bad = 0
    for payload in (
        read_topic(settings.lake, "outcomes", start, end, settings).column("payload").to_pylist()
    ):
        try:
            rows.append(decode(payload, TradeOutcome).to_dict())
        except EventDecodeError:
            bad += 1
    if bad:
        notes.append(f"{bad} outcome rows in the lake did not decode and were left out")
    preds: dict[str, dict[str, Any]] = {}
    if rows:
        signals = read_topic(settings.lake, "signals", start - timedelta(days=1), end, settings)
        for payload in signals.column("payload").to_pylist():
            try:
                sig = decode(payload, SignalSnapshot)
            except EventDecodeError:
                continue
            preds[sig.event_id] = {
                "predicted_r": sig.decision.predicted_r,
                "probabilities": dict(sig.decision.probabilities),
            }
    for row in rows:
        p = preds.get(row["signal_id"])
        row["predicted_r"] = p["predicted_r"] if p else None
        row["meta_prob"] = p["probabilities"].get(row["strategy"]) if p else None
        row.pop("model_versions", None)
        row.pop("schema", None)
    cols = [*REQUIRED_COLUMNS, "symbol", "entry_ts", "counterfactual", "event_id"]
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=cols)
    cf = int(frame["counterfactual"].astype(bool).sum()) if len(frame) else 0
    notes.append(
        f"{len(frame) - cf} trades and {cf} counterfactuals from {settings.lake}/outcomes "
        f"({len(preds)} signals joined for predictions)"
    )
    models: dict[str, Any] | None = None
    try:
        manifest = decode(object_store(settings).get(MANIFEST_KEY), ModelManifest)
        models = manifest.model_dump(mode="json", by_alias=True)
    except ObjectNotFoundError:
        notes.append(f"no manifest at {MANIFEST_KEY}")
    except EventDecodeError as exc:
        notes.append(f"manifest at {MANIFEST_KEY} did not decode: {exc}")
    return frame, models, notes


@click.command()
@click.option(
    "--date",
    "day",
    default="today",
    show_default=True,
    help="UTC day: YYYY-MM-DD, today or yesterday.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports"),
    show_default=True,
    help="Directory to write the HTML into.",
)
@click.option(
    "--tz", default="UTC", show_default=True, help="Time zone of the plots (e.g. America/Chicago)."
)
def report(day: str, out_dir: Path, tz: str) -> None:
    """Write the day's HTML report (trades from the event lake, models from the manifest)."""
    from infra.settings import get_settings

    today = datetime.now(UTC).date()
    try:
        when = {"today": today, "yesterday": today - timedelta(days=1)}.get(
            day
        ) or date.fromisoformat(day)
    except ValueError:
        raise click.BadParameter(
            f"{day!r} is not YYYY-MM-DD, today or yesterday", param_hint="--date"
        ) from None
    settings = get_settings()
    frame, models, notes = load_day(settings, when)
    try:
        path = write_backtest_report(
            frame, out_dir, f"tradeloop {when.isoformat()}", models, tz=tz, notes=notes
        )
    except ReportInputError as exc:
        raise click.ClickException(str(exc)) from None
    for note in notes:
        click.echo(note)
    click.echo(f"wrote {path}")
