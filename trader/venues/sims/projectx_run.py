"""`tradeloop venues sim projectx`: the ProjectX Gateway simulator trading the sim feed's bars."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from infra.settings import Settings
from trader.core.instruments import instruments_from_settings
from trader.feeds.sim import SimFeed
from trader.venues.sims.projectx import ProjectxSimulator

__all__ = ["run"]


@dataclass(frozen=True)
class _AlwaysOpen:
    """The simulator does no session-end flattening: the trader's engine does."""

    in_rth: bool = True
    minutes_to_close: int = 1 << 20


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
) -> None:
    """Serve the simulator on `host:port` until cancelled; `echo` the settings that reach it.

    The market (the sim feed's bars, one every `bar_ms` ms: each first fills working
    orders, then goes out on the market hub as trades) starts once a trader has
    subscribed to the user hub and to every symbol's trades on the market hub
    (`--feed projectx`), unless `wait_for_client` is off.
    """
    symbols = tuple(settings.symbols)
    instruments = {s: i for s, i in instruments_from_settings(settings).items() if s in symbols}
    sim = ProjectxSimulator(
        instruments,
        host=host,
        port=port,
        slippage_ticks=settings.slippage_ticks,
        commission_per_contract_usd=settings.commission_per_contract_usd,
    )
    await sim.start()
    echo(
        {
            "VENUE": "projectx",
            "PROJECTX_API_URL": sim.url,
            "PROJECTX_USER_HUB_URL": f"ws://{host}:{sim.port}/hubs/user",
            "PROJECTX_USERNAME": sim.username,
            "PROJECTX_API_KEY": sim.api_key,
            "PROJECTX_ACCOUNT": str(sim.account["name"]),
        }
    )
    try:
        deadline = time.monotonic() + 600
        wanted = [f"ContractTrades:{c['id']}" for c in sim.contracts.values()]
        while wait_for_client and not (
            sim.hub_clients and all(sim.market_hub.has(t) for t in wanted)
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("no trader subscribed to the user and market hubs within 600 s")
            await asyncio.sleep(0.05)  # the market opens once a trader listens
        feed = SimFeed(
            symbols,
            seed=seed,
            days=days,
            session="globex" if session == "globex" else "rth",
            instruments=instruments,
        )
        for bar in feed:
            sim.on_bar(bar, _AlwaysOpen())
            sim.publish_bar(bar)
            await asyncio.sleep(bar_ms / 1000)  # the market's clock
        await asyncio.Event().wait()  # keep serving orders and positions after the last bar
    finally:
        await sim.stop()
