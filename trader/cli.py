"""`tradeloop trade` and `tradeloop backtest`: one engine, two ways to drive it."""

from __future__ import annotations

import asyncio
import functools
import math
import time
import uuid
from pathlib import Path
from typing import Any

import click

from infra.settings import get_settings

__all__ = ["backtest", "flatten", "resume", "trade"]

_file_options = [
    click.option("--symbol", default=None, help="Symbol of a file without a symbol column."),
    click.option(
        "--skip-bad-rows", is_flag=True, help="Skip and count bad rows instead of failing."
    ),
    click.option(
        "--tz", default="UTC", show_default=True, help="Zone of timestamps that carry none."
    ),
    click.option(
        "--bar-ts",
        type=click.Choice(["close", "open"]),
        default="close",
        show_default=True,
        help="Whether file timestamps mark the bar's close or its open.",
    ),
]


def _with(options: list[Any]) -> Any:
    def deco(fn: Any) -> Any:
        for opt in reversed(options):
            fn = opt(fn)
        return fn

    return deco


def _symbols(value: str | None) -> tuple[str, ...]:
    if value:
        return tuple(s.strip().upper() for s in value.split(",") if s.strip())
    return tuple(get_settings().symbols)


@click.command()
@click.option(
    "--feed", default="sim", show_default=True, help="sim | csv:PATH | parquet:PATH | kafka"
)
@click.option("--symbols", default=None, help="Comma-separated symbols (default: SYMBOLS).")
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    help="Market time runs X times the wall clock (1 real time, 60 a bar-minute per second, 0 as fast as possible); ignored for kafka.",
)
@click.option("--max-bars", type=int, default=None, help="Stop after this many bars.")
@click.option(
    "--models-dir",
    default=None,
    help="ONNX models directory (default: MODELS_DIR, else META_ONNX/EXEC_ONNX/RL_ONNX).",
)
@click.option("--no-api", is_flag=True, help="Do not serve the HTTP API.")
@click.option("--http-port", type=int, default=None, help="HTTP port (default: HTTP_PORT).")
@click.option(
    "--source",
    default=None,
    help="Tag events with this source (default: sim, vendor or live by feed).",
)
@click.option("--run-id", default="", help="Run id carried by every event (default: random).")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the sim feed.")
@click.option(
    "--from-beginning", is_flag=True, help="kafka feed: read the bars topic from the start."
)
@click.option(
    "--drain-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to drain the outbox on exit.",
)
@click.option(
    "--venue",
    default=None,
    help="Venue that routes the orders, by name (default: VENUE, else paper).",
)
@_with(_file_options)
def trade(
    feed: str,
    symbols: str | None,
    speed: float,
    max_bars: int | None,
    models_dir: str | None,
    no_api: bool,
    http_port: int | None,
    source: str | None,
    run_id: str,
    seed: int,
    from_beginning: bool,
    drain_timeout: float,
    venue: str | None,
    symbol: str | None,
    skip_bad_rows: bool,
    tz: str,
    bar_ts: str,
) -> None:
    """Run the paper trader on a feed, spooling events to Kafka through the outbox."""
    from trader.core.killswitch import KillSwitchError
    from trader.delivery.models import ModelLoadError
    from trader.feeds.base import FeedDataError
    from trader.live import TradeOptions, run_trade
    from trader.recovery import RecoveryError
    from trader.venues import VenueError
    from trader.venues.journal import JournalError

    settings = get_settings()
    opts = TradeOptions(
        feed=feed,
        symbols=_symbols(symbols),
        speed=speed,
        max_bars=max_bars,
        models_dir=models_dir,
        api=not no_api,
        http_host=settings.http_host,
        http_port=http_port or settings.http_port,
        source=source,
        run_id=run_id,
        seed=seed,
        symbol=symbol,
        skip_bad=skip_bad_rows,
        tz=tz,
        bar_ts=bar_ts,
        from_beginning=from_beginning,
        drain_timeout_s=drain_timeout,
        venue=venue,
    )
    try:
        runtime = asyncio.run(run_trade(settings, opts))
    except (
        FeedDataError,
        ModelLoadError,
        ValueError,
        RecoveryError,
        JournalError,
        KillSwitchError,
        VenueError,
    ) as exc:
        raise click.ClickException(str(exc)) from None
    status = runtime.engine.status()
    click.echo(
        f"run {status['run_id']}: {status['bars']} bars, {status['events']} events, "
        f"PnL {status['realized_pnl_usd']}, outbox depth {runtime.outbox.depth if runtime.outbox else 0}"
    )


@click.command()
@click.option(
    "--data",
    default=None,
    help="Bars file, by extension: CSV, parquet or Databento DBN (.dbn, .dbn.zst).",
)
@click.option(
    "--feed",
    "feed_spec",
    default=None,
    help="sim | csv:PATH | parquet:PATH | dbn:PATH (instead of --data).",
)
@click.option(
    "--bars",
    "n_bars",
    type=int,
    default=None,
    help="Stop after this many bars (sim: how many to simulate).",
)
@click.option("--symbols", default=None, help="Comma-separated symbols (default: SYMBOLS).")
@click.option(
    "--out", "out_dir", default=None, help="Output directory (default: {home}/backtests/{run_id})."
)
@click.option(
    "--source", default=None, help="Tag events with this source (default: sim or vendor by feed)."
)
@click.option(
    "--events-out",
    default=None,
    help="Write every signal, order event and outcome to this event lake (dir or s3://).",
)
@click.option(
    "--models-dir",
    default=None,
    help="ONNX models directory (default: MODELS_DIR, else META_ONNX/EXEC_ONNX/RL_ONNX).",
)
@click.option("--run-id", default="", help="Run id carried by every event (default: random).")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the sim feed.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--no-plot", is_flag=True, help="Skip the equity-curve PNG.")
@click.option(
    "--venue",
    default=None,
    help="Venue that routes the orders, by name (default: VENUE, else paper).",
)
@click.option(
    "--incremental",
    is_flag=True,
    help="Update features bar by bar as live trading does (default: batched, same events).",
)
@_with(_file_options)
def backtest(
    data: str | None,
    feed_spec: str | None,
    n_bars: int | None,
    symbols: str | None,
    out_dir: str | None,
    source: str | None,
    events_out: str | None,
    models_dir: str | None,
    run_id: str,
    seed: int,
    no_progress: bool,
    no_plot: bool,
    venue: str | None,
    incremental: bool,
    symbol: str | None,
    skip_bad_rows: bool,
    tz: str,
    bar_ts: str,
) -> None:
    """Backtest bars through the trader's engine (no Kafka, no API) as fast as possible."""
    from rich.console import Console

    from features.tape import load_kernel
    from infra.heap import batch_heap
    from trader.backtest import (
        TradeRecorder,
        print_summary,
        write_equity_png,
        write_summary,
        write_trades,
    )
    from trader.core.engine import Engine, EngineConfig
    from trader.core.tape_run import run_batched
    from trader.delivery.models import ModelHolder, ModelLoadError, ModelSet
    from trader.feeds import FeedDataError, open_feed
    from trader.io.events_out import LakeSink
    from trader.venues import VenueError, venue_for

    if bool(data) == bool(feed_spec):
        raise click.UsageError("give exactly one of --data PATH or --feed SPEC")
    settings = get_settings()
    syms = _symbols(symbols)
    spec = feed_spec or data or ""
    if spec.partition(":")[0] == "kafka":
        raise click.UsageError(
            "backtests read sim or files; use `tradeloop trade --feed kafka` for Kafka"
        )
    days = None
    if spec == "sim" and n_bars:
        days = max(1, math.ceil(n_bars / (23 * 60 * len(syms))))
    elif spec == "sim":
        raise click.UsageError("--feed sim needs --bars N")
    try:
        feed = open_feed(
            spec,
            symbols=syms,
            seed=seed,
            days=days,
            symbol=symbol,
            skip_bad=skip_bad_rows,
            tz=tz,
            bar_ts=bar_ts,  # type: ignore[arg-type]
        )
        # a backtest places no orders: unsigned files are fine (docs/releases.md)
        models = ModelSet.from_settings(settings, models_dir, require_signed=False)
        routed = venue_for(venue or settings.venue, settings)
        asyncio.run(routed.connect())
    except (FeedDataError, ModelLoadError, VenueError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    run = run_id or uuid.uuid4().hex[:12]
    out = Path(out_dir) if out_dir else settings.home / "backtests" / run
    recorder = TradeRecorder()
    sinks: list[Any] = [recorder]
    lake = LakeSink(events_out, settings) if events_out else None
    if lake is not None:
        sinks.append(lake)
    engine = Engine(
        settings,
        EngineConfig(
            symbols=syms,
            source=source or feed.source,
            run_id=run,
            emit_bars=settings.emit_bars,  # EMIT_BARS=1: bars go to the sinks (and the lake) too
            record_metrics=False,
        ),
        ModelHolder(models),
        sinks=sinks,
        venue=routed,
    )
    console = Console(stderr=True)
    total = n_bars or (len(feed) if hasattr(feed, "__len__") else None)  # type: ignore[arg-type]
    if not incremental:
        load_kernel()  # start-up: the feature tape's compiled kernel (numba's cache)
    run_bars = engine.run if incremental else functools.partial(run_batched, engine)
    with batch_heap():  # start-up done: freeze the heap, collect rarely (infra/heap.py)
        t0 = time.perf_counter()
        if no_progress or (total is not None and total < 200_000):
            processed = run_bars(feed, max_bars=n_bars)
        else:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("bars", total=total)
                processed = run_bars(
                    feed, max_bars=n_bars, progress=lambda n: progress.update(task, completed=n)
                )
                progress.update(task, completed=processed)
        engine.finish()
    elapsed = time.perf_counter() - t0
    keys = lake.flush() if lake is not None else []
    summary = engine.stats.summary()
    print_summary(summary, Console(width=160))
    trades_path = write_trades(recorder.trades, out / "trades.parquet")
    png = (
        None
        if no_plot
        else write_equity_png(
            engine.equity, out / "equity.png", f"tradeloop backtest {run} ({feed.name})"
        )
    )
    info = {
        "run_id": run,
        "feed": feed.name,
        "source": engine.source,
        "models": models.release,
        "bars": processed,
        "features": "incremental" if incremental else "batched",
        "skipped_rows": feed.stats.skipped_by_reason,
        "seconds": round(elapsed, 3),
        "bars_per_s": round(processed / elapsed) if elapsed > 0 else None,
        "events": engine.events_emitted,
        "lake_files": len(keys),
        "summary": summary,
    }
    write_summary(info, out / "summary.json")
    click.echo(
        f"{processed} bars in {elapsed:.2f}s ({info['bars_per_s']} bars/s); {len(recorder.trades)} trades -> {trades_path}"
        + (f"; equity -> {png}" if png else "")
        + (
            f"; {engine.events_emitted} events -> {events_out} ({len(keys)} files)"
            if lake is not None
            else ""
        )
    )
    if feed.stats.skipped:
        click.echo(f"skipped rows: {feed.stats.skipped_by_reason}")


def _control(action: str, url: str | None, by: str, reason: str) -> dict[str, Any]:
    from trader.io.api_client import TraderApiError, post_control

    settings = get_settings()
    base = url or f"http://{settings.http_host}:{settings.http_port}"
    try:
        return post_control(base, action, settings.trader_api_token, by=by, reason=reason)
    except TraderApiError as exc:
        raise click.ClickException(str(exc)) from None


_control_options = [
    click.option("--url", default=None, help="Trader API (default: http://HTTP_HOST:HTTP_PORT)."),
    click.option("--by", default="cli", show_default=True, help="Who asks (recorded)."),
    click.option("--reason", default="", help="Why (recorded and shown on /healthz)."),
]


@click.command()
@_with(_control_options)
def flatten(url: str | None, by: str, reason: str) -> None:
    """Kill switch: cancel every working order, flatten every position, halt entries."""
    state = _control("kill", url, by, reason or "tradeloop flatten")
    actions = state.get("last_actions", {})
    click.echo(
        f"halted by {state['by']} at {state['at']}: cancelled {actions.get('cancelled')} orders, "
        f"flattened {actions.get('flattened')} positions; `tradeloop resume` lifts it"
    )


@click.command()
@_with(_control_options)
def resume(url: str | None, by: str, reason: str) -> None:
    """Lift the kill switch (entries stay refused while another hold remains)."""
    state = _control("resume", url, by, reason or "tradeloop resume")
    entries = state.get("entries_now", {})
    refused = entries.get("refused_because")
    click.echo(
        f"kill switch lifted by {state['by']} at {state['at']}; "
        + (f"entries still refused: {refused}" if refused else "entries allowed")
    )
