"""`tradeloop venues sim ib`: the IB simulator serving a market made of the sim feed's bars.

The gateway matches orders on each bar, then streams the bar to `reqRealTimeBars`
subscribers (`--feed ib`), so a trader sees the same market its orders fill in.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from infra.settings import Settings
from trader.core.bar import MarketBar
from trader.core.instruments import instruments_from_settings
from trader.feeds.sim import SimFeed
from trader.venues.sims.ib import IbSimulator

__all__ = ["play", "run"]


@dataclass(frozen=True)
class _AlwaysOpen:
    """The simulator does no session-end flattening: the trader's engine does."""

    in_rth: bool = True
    minutes_to_close: int = 1 << 20


async def play(
    sim: IbSimulator,
    bars: Iterable[MarketBar],
    *,
    bar_ms: int,
    wait_for: tuple[str, ...] = (),
    wait_s: float = 600.0,
) -> int:
    """Trade `bars` one every `bar_ms` ms, after every symbol in `wait_for` has a subscriber.

    Return the number of bars played.
    """
    deadline = time.monotonic() + wait_s
    while not all(sim.bar_subscribers.get(s) for s in wait_for):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no real-time bar subscriber for {wait_for} within {wait_s} s")
        await asyncio.sleep(0.05)  # the market opens once the trader listens
    n = 0
    for bar in bars:
        sim.on_bar(bar, _AlwaysOpen())
        sim.publish_bar(bar)
        n += 1
        await asyncio.sleep(bar_ms / 1000)  # the market's clock
    return n


async def run(
    settings: Settings,
    host: str,
    port: int,
    echo: Callable[[dict[str, str]], None],
    *,
    seed: int = 7,
    days: int | None = 1,
    bar_ms: int = 1000,
    wait_for_client: bool = True,
    session: str = "rth",
    restart_down_s: float = 2.0,
) -> None:
    """Serve the simulator on `host:port` until cancelled; `echo` the settings that reach it.

    SIGHUP restarts the gateway as its nightly restart does: every session drops and
    connections are refused for `restart_down_s` seconds; orders and positions stay.
    """
    symbols = tuple(settings.symbols)
    instruments = {s: i for s, i in instruments_from_settings(settings).items() if s in symbols}
    sim = IbSimulator(
        instruments,
        host=host,
        port=port,
        slippage_ticks=settings.slippage_ticks,
        commission_per_contract_usd=settings.commission_per_contract_usd,
    )
    await sim.start()
    values = {
        "venue": "ib",
        "ib_host": host,
        "ib_port": str(sim.port),
        "ib_client_id": str(settings.ib_client_id),
        "ib_account": sim.account,
    }
    echo({_env_name(name): value for name, value in values.items()})
    restarts: set[asyncio.Task[None]] = set()

    def nightly_restart() -> None:
        task = asyncio.ensure_future(sim.restart_gateway(restart_down_s))
        restarts.add(task)
        task.add_done_callback(restarts.discard)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, nightly_restart)
    try:
        feed = SimFeed(
            symbols,
            seed=seed,
            days=days,
            session="globex" if session == "globex" else "rth",
            instruments=instruments,
        )
        await play(sim, feed, bar_ms=bar_ms, wait_for=symbols if wait_for_client else ())
        await asyncio.Event().wait()  # keep serving orders and positions after the last bar
    finally:
        await sim.stop()


def _env_name(field: str) -> str:
    """Return the environment variable of a settings field (its alias, spelled once there)."""
    alias = Settings.model_fields[field].validation_alias
    if not isinstance(alias, str):
        raise KeyError(f"setting {field!r} has no environment variable")
    return alias
