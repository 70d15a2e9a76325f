"""The trading process: feed -> engine -> outbox, with the drain thread and the HTTP API.

One asyncio loop runs the feed, the engine and uvicorn; the outbox drains to Kafka
from its own thread, so neither the API nor a dead broker can stall trading.
SIGINT/SIGTERM stop the feed; open positions are then closed (`shutdown`) and the
outbox gets `drain_timeout_s` to empty (what is left stays spooled for next time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from infra.bus import KafkaBus
from infra.contracts import DeadLetter
from infra.heap import settle
from infra.settings import Settings
from trader import metrics
from trader.core.bar import MarketBar
from trader.core.engine import Engine, EngineConfig
from trader.delivery.canary import ModelRouter
from trader.delivery.hotswap import STARTUP_WAIT_S, HotSwapper, kafka_configured
from trader.delivery.models import ModelHolder, ModelSet
from trader.feeds import Feed, Pacer, open_feed
from trader.io.api import create_app
from trader.io.console import ConsoleFeed
from trader.io.drainer import OutboxDrainer
from trader.io.drift_watch import DriftWatcher
from trader.io.outbox import OUTBOX_HOLD, Outbox, fsync_policy
from trader.recovery import Recovery
from trader.runtime import Runtime
from trader.venues import venue_for

__all__ = ["TradeOptions", "outbox_dir", "run_trade"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TradeOptions:
    """Options of `tradeloop trade`."""

    feed: str = "sim"
    symbols: tuple[str, ...] = ("ES", "NQ")
    speed: float = 1.0
    max_bars: int | None = None
    models_dir: str | None = None
    api: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    source: str | None = None
    run_id: str = ""
    seed: int = 7
    symbol: str | None = None
    skip_bad: bool = False
    tz: str = "UTC"
    bar_ts: str = "close"
    from_beginning: bool = False
    drain_timeout_s: float = 30.0
    venue: str | None = None  # by name (trader.venues.VENUES); default: VENUE


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (the trader shuts down in order)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def outbox_dir(settings: Settings) -> Path:
    """Return the spool directory (`OUTBOX_DIR`, default `{home}/outbox`)."""
    return Path(settings.outbox_dir) if settings.outbox_dir else settings.home / "outbox"


def watch_outbox_writes(outbox: Outbox, engine: Engine) -> None:
    """While the spool cannot write: no new positions (a risk hold), the alarm gauge set."""

    def failing(why: str) -> None:
        engine.risk.hold(
            OUTBOX_HOLD, f"the outbox cannot write ({why}); open positions are managed"
        )
        metrics.OUTBOX_WRITE_FAILING.set(1)

    def recovered() -> None:
        engine.risk.release(OUTBOX_HOLD)
        metrics.OUTBOX_WRITE_FAILING.set(0)

    outbox.on_write_error, outbox.on_write_ok = failing, recovered
    metrics.OUTBOX_WRITE_FAILING.set(0)


async def _until(bars: AsyncIterator[MarketBar], stop: asyncio.Event) -> AsyncIterator[MarketBar]:
    """Yield the bars of a live feed until it ends or `stop` is set, even on a quiet market."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            nxt = asyncio.ensure_future(anext(bars))
            await asyncio.wait({nxt, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not nxt.done():
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt
                return
            try:
                bar = nxt.result()
            except StopAsyncIteration:
                return
            yield bar
    finally:
        stopped.cancel()


async def _retry_held_writes(outbox: Outbox, stop: asyncio.Event, every_s: float = 0.5) -> None:
    """Write what a full disk held as soon as it has room, bars or no bars."""
    while not stop.is_set():
        if outbox.held:
            outbox.write_held()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


def build_feed(opts: TradeOptions, bus: KafkaBus | None, on_dead_letter: Any = None) -> Feed:
    """Open the feed named by the options."""
    return open_feed(
        opts.feed,
        symbols=opts.symbols,
        seed=opts.seed,
        symbol=opts.symbol,
        skip_bad=opts.skip_bad,
        tz=opts.tz,
        bar_ts=opts.bar_ts,  # type: ignore[arg-type]
        bus=bus,
        from_beginning=opts.from_beginning,
        on_dead_letter=on_dead_letter,
    )


async def run_trade(
    settings: Settings, opts: TradeOptions, stop: asyncio.Event | None = None
) -> Runtime:
    """Trade until the feed ends, `max_bars` bars, or `stop` is set; return the runtime."""
    stop = stop or asyncio.Event()
    models = ModelSet.from_settings(settings, opts.models_dir)
    holder = ModelHolder(models)
    metrics.set_release(models.release)
    bus = KafkaBus(settings)
    venue_name = opts.venue or settings.venue
    outbox = Outbox(outbox_dir(settings), fsync=fsync_policy(settings.outbox_fsync, venue_name))
    drainer = OutboxDrainer(
        outbox, bus, on_sent=lambda topic, n: metrics.EVENTS_OUT.labels(topic=topic).inc(n)
    ).start()

    def dead_letter(dl: DeadLetter) -> None:
        outbox.append_event("dlq", dl)

    feed = build_feed(opts, bus, dead_letter)
    venue = venue_for(venue_name, settings)
    await venue.connect()
    # hot swap + canary (trader/delivery/hotswap.py, trader/delivery/canary.py)
    router = ModelRouter.from_settings(settings, holder) if settings.canary_mode != "off" else None
    swapper = HotSwapper(settings, holder, router=router) if kafka_configured(settings) else None
    engine = Engine(
        settings,
        EngineConfig(
            symbols=opts.symbols,
            source=opts.source or feed.source,
            run_id=opts.run_id,
            emit_bars=settings.emit_bars and not feed.live,  # never echo the bars topic
        ),
        holder,
        sinks=[outbox.sink],
        router=router,
        venue=venue,
    )
    watch_outbox_writes(outbox, engine)
    mode = "paper" if venue.name == "paper" else "live"
    runtime = Runtime(settings, engine, feed, holder, mode=mode, outbox=outbox, drainer=drainer)
    # journal, adoption, reconciliation, kill switch, prop-firm account (trader/recovery.py)
    recovery = Recovery(settings, engine)
    runtime.reconciliation = recovery.start(outbox.last_record)
    runtime.venue, runtime.killswitch, runtime.recovery = (
        engine.venue,
        recovery.killswitch,
        recovery,
    )
    runtime.swapper, runtime.router = swapper, router
    runtime.console = console = ConsoleFeed().attach(engine)  # the operator console's facts
    swap_stop = asyncio.Event()
    swap_task = asyncio.create_task(swapper.run(swap_stop)) if swapper is not None else None
    held_task = asyncio.create_task(_retry_held_writes(outbox, swap_stop))
    # the streams worker's drift alerts, for the console only
    drift = runtime.drift = DriftWatcher(bus, console) if kafka_configured(settings) else None
    drift_task = asyncio.create_task(drift.run(swap_stop)) if drift is not None else None
    if swapper is not None and holder.current.empty:  # start on the latest release if any
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(swapper.ready.wait(), STARTUP_WAIT_S)
    server: _Server | None = None
    server_task: asyncio.Task[None] | None = None
    if opts.api:
        config = uvicorn.Config(
            create_app(runtime),
            host=opts.http_host,
            port=opts.http_port,
            log_level="warning",
            lifespan="off",
        )
        server = _Server(config)
        server_task = asyncio.create_task(server.serve())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    log.info(
        "trading %s on %s (run %s, %s path, release %s)",
        ",".join(opts.symbols),
        feed.name,
        engine.run_id,
        "rules" if models.empty else "models",
        models.release,
    )
    settle()  # start-up done: freeze the heap (infra/heap.py)
    pacer = Pacer(0.0 if feed.live else opts.speed)
    n = 0
    try:
        async for bar in _until(feed.aiter(), stop) if feed.live else feed.aiter():
            if stop.is_set():
                break
            if pacer.speed > 0:
                await pacer.await_due(bar.ts_s)
            try:
                engine.on_bar(bar)
            except Exception as exc:  # one bad bar must not stop the trader: count, log, go on
                runtime.bar_errors += 1
                runtime.last_bar_error = f"{bar!r}: {type(exc).__name__}: {exc}"[:500]
                log.exception("bar %r failed; trading goes on", bar)
            recovery.after_bar()  # reconcile after a reconnect; prop-firm breach -> kill switch
            runtime.reconciliation = recovery.last
            drainer.notify()
            n += 1
            if opts.max_bars is not None and n >= opts.max_bars:
                break
    finally:
        swap_stop.set()
        await held_task
        if swap_task is not None:
            await swap_task
        if drift_task is not None:
            await drift_task
        if swapper is not None and swapper.helper is not None:
            await asyncio.to_thread(swapper.helper.close)  # the release helper process
        await feed.aclose()
        engine.finish()
        try:  # the journal stays open until the venue is gone: fills of a closing flatten land
            await venue.disconnect()
        finally:
            recovery.close()
        drained = await asyncio.to_thread(drainer.stop, opts.drain_timeout_s)
        outbox.close()
        if not drained:
            log.warning(
                "outbox: %d events stay spooled in %s for the next run", outbox.depth, outbox.dir
            )
        if server is not None and server_task is not None:
            console.close()  # end the console's live streams, or uvicorn waits for them
            server.should_exit = True
            await server_task
    return runtime
