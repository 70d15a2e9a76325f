"""`projectx` and `--feed projectx` when a hub hangs: the websocket open, nothing answered or sent.

The simulator's hubs ping every session (as ASP.NET Core's SignalR does) and a
hub's `silence` keeps sessions open while it reads and drops every record and
writes nothing; REST keeps answering.
"""

from __future__ import annotations

import asyncio

from tests.trader.venues import silence as hush
from tests.trader.venues.projectx.driver import (
    INSTRUMENTS,
    T0,
    RegularHours,
    settings_for,
    start_projectx,
)
from trader.feeds.projectx import ProjectxFeed
from trader.venues.sims.projectx import ProjectxSimulator

BOUND_S = 1.5
PING_S = 0.25  # the hubs' keep-alive interval
PINGS = int(BOUND_S / PING_S) + 2  # the hub's pings: more than the bound
#: the watch's own pings rarer than the hub's: the hub's alone keep it alive
WATCH = {"silence_timeout_s": BOUND_S, "keepalive_s": 60.0, "watch_s": 0.02}


def test_a_silent_user_hub_is_noticed_within_the_bound_and_the_bracket_reconciles() -> None:
    async def scenario() -> None:
        sim = ProjectxSimulator(INSTRUMENTS, slippage_ticks=1, commission_per_contract_usd=2.1)
        sim.user_hub.keepalive_s = PING_S
        await sim.start()
        d = await start_projectx(sim=sim, connect_timeout_s=1.0, **WATCH)
        hub = sim.user_hub
        await hush.check_venue_silence(
            hush.VenueSilence(
                d,
                lambda: hush.silences("projectx", "user"),
                1,
                lambda: d.px.reconnects,
                lambda: hush.idle_for(lambda: hub.pings_sent, PINGS, BOUND_S),
                hub,
                RegularHours(),
                BOUND_S,
                PING_S,
            ),
            "calm-entry",
        )

    asyncio.run(scenario())


def test_the_feed_stays_up_without_trades_and_resubscribes_after_a_silence() -> None:
    async def scenario() -> None:
        sim = ProjectxSimulator(INSTRUMENTS)
        sim.market_hub.keepalive_s = PING_S
        await sim.start()
        feed = ProjectxFeed(
            ("ES",), settings_for(sim, connect_timeout_s=1.0, **WATCH), retry_s=0.05
        )
        hub, es = sim.market_hub, sim.contracts["ES"]["id"]
        try:
            await hush.check_feed_silence(
                hush.FeedSilence(
                    feed,
                    ("projectx", "market"),
                    lambda: hub.has(f"ContractTrades:{es}"),
                    sim,
                    lambda: hush.idle_for(lambda: hub.pings_sent, PINGS, BOUND_S),
                    hub,
                    BOUND_S,
                    PING_S,
                ),
                T0,
            )
        finally:
            await sim.stop()

    asyncio.run(scenario())
