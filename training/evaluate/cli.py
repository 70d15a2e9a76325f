"""`tradeloop evaluate`: does learning help? The learning loop against its baselines."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from infra.settings import get_settings

__all__ = ["evaluate"]


def _duration_s(text: str, what: str) -> int:
    from infra.timeutil import parse_duration

    try:
        return int(parse_duration(text))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=what) from None


@click.command()
@click.option("--feed", "feed_spec", default=None, help="sim | csv:PATH | parquet:PATH | dbn:PATH.")
@click.option("--data", default=None, help="A bars file (CSV, parquet or DBN), instead of --feed.")
@click.option("--symbols", default=None, help="Comma-separated symbols (default: SYMBOLS).")
@click.option("--days", type=int, default=None, help="sim: trading days to simulate.")
@click.option("--seed", type=int, default=7, show_default=True, help="Sim and training seed.")
@click.option(
    "--retrain-every",
    default="1d",
    show_default=True,
    help="Market time between retrains (30m, 6h, 1d).",
)
@click.option("--warmup", default=None, help="Market time before the first retrain (default: --retrain-every).")  # fmt: skip
@click.option(
    "--profile",
    type=click.Choice(["small", "standard"]),
    default="small",
    show_default=True,
    help="Training profile of every retrain.",
)
@click.option("--release", default=None, help="Evaluate this release (rNNNNNN or a sequence) without retraining.")  # fmt: skip
@click.option("--out", "out_dir", default=None, help="Run directory (default: {home}/evaluations/{UTC time}).")  # fmt: skip
@click.option("--resume", is_flag=True, help="Carry on the run in --out from its checkpoint.")
@click.option("--max-steps", type=int, default=None, help="Stop after this many retrain steps (resume later).")  # fmt: skip
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--symbol", default=None, help="Symbol of a file without a symbol column.")
@click.option("--tz", default="UTC", show_default=True, help="Zone of timestamps that carry none.")
@click.option("--bar-ts", type=click.Choice(["close", "open"]), default="close", show_default=True, help="Whether file timestamps mark the bar's close or its open.")  # fmt: skip
@click.option("--skip-bad-rows", is_flag=True, help="Skip and count bad rows instead of failing.")
@click.option("--allow-long-bars", is_flag=True, help="Trade bars longer than 15 minutes (hourly), with a warning.")  # fmt: skip
def evaluate(
    feed_spec: str | None,
    data: str | None,
    symbols: str | None,
    days: int | None,
    seed: int,
    retrain_every: str,
    warmup: str | None,
    profile: str,
    release: str | None,
    out_dir: str | None,
    resume: bool,
    max_steps: int | None,
    no_progress: bool,
    symbol: str | None,
    tz: str,
    bar_ts: str,
    skip_bad_rows: bool,
    allow_long_bars: bool,
) -> None:
    """Walk a history with the learning loop, the rules and the first release frozen."""
    from training.config import TrainingError
    from training.evaluate.loop import EvaluateOptions
    from training.evaluate.loop import evaluate as run

    if bool(data) == bool(feed_spec):
        raise click.UsageError("give exactly one of --data PATH or --feed SPEC")
    spec = feed_spec or data or ""
    if spec == "sim" and not days:
        raise click.UsageError("--feed sim needs --days N")
    if resume and not out_dir:
        raise click.UsageError("--resume needs the --out of the run to resume")
    settings = get_settings()
    syms = tuple(s.strip().upper() for s in (symbols or ",".join(settings.symbols)).split(","))
    opts = EvaluateOptions(
        feed=spec,
        symbols=tuple(s for s in syms if s),
        seed=seed,
        days=days if spec == "sim" else None,
        symbol=symbol,
        tz=tz,
        bar_ts=bar_ts,
        skip_bad_rows=skip_bad_rows,
        allow_long_bars=allow_long_bars,
        retrain_every_s=_duration_s(retrain_every, "--retrain-every"),
        warmup_s=_duration_s(warmup, "--warmup") if warmup else None,
        profile=profile,
        release=release,
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(out_dir) if out_dir else settings.home / "evaluations" / stamp
    try:
        walked = _run_with_progress(run, settings, opts, out, resume, max_steps, not no_progress)
        if walked.paused:
            click.echo(
                f"paused after {len(walked.checkpoint.steps)} retrain steps "
                f"({walked.elapsed_s:.1f}s); `tradeloop evaluate ... --out {out} --resume` goes on"
            )
            return
        from training.evaluate.report import write_report

        summary = write_report(walked)
    except (TrainingError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    run_info = summary["run"]
    done = (
        f"release {release} evaluated without retraining"
        if release
        else f"{len(summary['steps'])} retrain steps, {summary['releases']} releases"
    )
    click.echo(f"{run_info['bars']} bars, {done} in {walked.elapsed_s:.1f}s")
    for arm, by_symbol in summary["arms"].items():
        m = by_symbol["ALL"]["ALL"]
        click.echo(
            f"  {arm:9s} PnL {m['pnl_usd']:>12,.0f} USD  Sharpe {m['sharpe']:6.2f}  "
            f"trades {m['trades']:5d}  avg R {m['avg_r']:6.3f}  max DD {m['max_drawdown_usd']:,.0f}"
        )
    for name, verdict in summary["verdicts"].items():
        click.echo(f"  {name}: {verdict}")
    dsr = summary["dsr"]
    click.echo(f"  DSR {dsr['dsr']:.3f} for {dsr['trials']} releases tried")
    click.echo(f"report: {out / 'report.html'}  summary: {out / 'summary.json'}")


def _run_with_progress(
    run: Any, settings: Any, opts: Any, out: Path, resume: bool, max_steps: int | None, show: bool
) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not show,
    ) as bar:
        task = bar.add_task("starting the walk", total=None)

        def progress(bars: int, total: int | None, text: str) -> None:
            bar.update(task, completed=bars, total=total, description=f"bars · {text}")

        return run(settings, opts, out, resume=resume, max_steps=max_steps, progress=progress)
