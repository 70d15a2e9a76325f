"""`tradeloop features`: render/apply the Feast repo, read online values, build history."""

from __future__ import annotations

import json
from pathlib import Path

import click

from infra.settings import get_settings

__all__ = ["features"]


@click.group()
def features() -> None:
    """The Feast feature repo (features/repo): apply, get, history."""


@features.command()
def render() -> None:
    """Write feature_store.yaml from settings (without registering anything)."""
    from features.store import TradeloopFeatureStore

    click.echo(TradeloopFeatureStore(get_settings()).render())


@features.command()
def apply() -> None:
    """Render feature_store.yaml from settings and apply the definitions."""
    from features.store import TradeloopFeatureStore

    fs = TradeloopFeatureStore(get_settings())
    views = fs.apply(force=True)
    click.echo(f"applied project {fs.project} in {fs.repo_dir}: {', '.join(views)}")


@features.command()
@click.option("--symbol", required=True, help="Symbol, e.g. ES.")
@click.option("--strategy", required=True, help="Strategy, e.g. S2.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def get(symbol: str, strategy: str, as_json: bool) -> None:
    """Print the online stream features of (symbol, strategy) with their event times."""
    from features.store import TradeloopFeatureStore

    values = TradeloopFeatureStore(get_settings()).online(symbol.upper(), strategy)
    rows = {
        k: {"value": v, "event_timestamp": ts.isoformat() if ts else None}
        for k, (v, ts) in values.items()
    }
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(k) for k in rows) if rows else 0
    for name, row in rows.items():
        click.echo(f"{name:<{width}}  {row['value']!s:<24}  {row['event_timestamp'] or '-'}")


@features.command()
@click.option(
    "--entities",
    "entities_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV or parquet with symbol, strategy, event_timestamp.",
)
@click.option(
    "--from", "start", default=None, help="Without --entities: signals from this time (UTC ISO)."
)
@click.option("--to", "end", default=None, help="Without --entities: signals before this time.")
@click.option(
    "--features",
    "refs",
    default="",
    help="Comma-separated view:feature refs (default: stream features).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the frame to .parquet or .csv instead of printing it.",
)
def history(
    entities_path: Path | None, start: str | None, end: str | None, refs: str, out_path: Path | None
) -> None:
    """Build a point-in-time-correct training frame for given signals."""
    import pandas as pd

    from features.store import TradeloopFeatureStore
    from infra.lake import read_topic
    from infra.timeutil import parse_time

    settings = get_settings()
    if entities_path is not None:
        frame = (
            pd.read_parquet(entities_path)
            if entities_path.suffix == ".parquet"
            else pd.read_csv(entities_path)
        )
    else:
        table = read_topic(settings.lake, "signals", parse_time(start), parse_time(end), settings)
        frame = table.select(["event_id", "symbol", "strategy", "event_timestamp"]).to_pandas()
    if frame.empty:
        raise click.ClickException("no signals to build a frame for")
    fs = TradeloopFeatureStore(settings)
    chosen = [r.strip() for r in refs.split(",") if r.strip()] or None
    out = fs.historical(frame, chosen)
    if out_path is None:
        with pd.option_context("display.max_columns", 20, "display.width", 200):
            click.echo(out.to_string(max_rows=50))
        return
    if out_path.suffix == ".parquet":
        out.to_parquet(out_path, index=False)
    else:
        out.to_csv(out_path, index=False)
    click.echo(f"wrote {len(out)} rows to {out_path}")
