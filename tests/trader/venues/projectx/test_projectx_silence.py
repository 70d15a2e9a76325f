"""`projectx` and `--feed projectx` when a hub hangs: the websocket open, nothing answered or sent.

The simulator's hubs ping every session (as ASP.NET Core's SignalR does) and a
hub's `silence` keeps sessions open while it reads and drops every record and
writes nothing; REST keeps answering.
"""

from __future__ import annotations

import asyncio

from infra.contracts import OrderCancelled, OrderFilled, OrderSubmitted
from tests.trader.venues.conformance import Recorder, _bracket, _filled_bracket
from tests.trader.venues.projectx.driver import (
    INSTRUMENTS,
    T0,
    RegularHours,
    settings_for,
    start_projectx,
)
from tests.trader.venues.silence import (
    FeedSilence,
    assert_reconciles,
    check_feed_silence,
    idle_for,
    noticed_within,
    silences,
)
from trader.core.bar import MarketBar
from trader.feeds.projectx import ProjectxFeed
from trader.venues.base import ConnectionState
from trader.venues.sims.projectx import ProjectxSimulator

BOUND_S = 1.5
PING_S = 0.25  # the hub's keep-alive interval
PINGS = int(BOUND_S / PING_S) + 2  # the hub's pings: more than the bound
#: the watch's own pings: rarer than the hub's, so the hub's alone keep it alive
WATCH = {"silence_timeout_s": BOUND_S, "keepalive_s": 60.0, "watch_s": 0.02}


def test_a_silent_user_hub_is_noticed_within_the_bound_and_the_bracket_reconciles() -> None:
    async def scenario() -> None:
        sim = ProjectxSimulator(INSTRUMENTS, slippage_ticks=1, commission_per_contract_usd=2.1)
        sim.user_hub.keepalive_s = PING_S
        await sim.start()
        d = await start_projectx(sim=sim, connect_timeout_s=1.0, **WATCH)
        rec = Recorder()
        d.venue.add_listener(rec)
        try:
            o = _bracket(d, "calm-entry", qty=2)
            _stop, target = await _filled_bracket(d, rec, o)
            before, orders = silences("projectx", "user"), len(sim.orders)

            # idle: only the hub's pings arrive, for longer than the bound; still up
            assert await idle_for(lambda: sim.user_hub.pings_sent, PINGS, BOUND_S) > BOUND_S
            assert d.venue.state is ConnectionState.CONNECTED and d.px.reconnects == 0
            assert silences("projectx", "user") == before

            sim.user_hub.silence()
            await noticed_within(
                lambda: d.venue.state is ConnectionState.CONNECTING, BOUND_S, PING_S
            )
            assert silences("projectx", "user") == before + 1

            away = MarketBar("ES", d.ts_s + 60, target, target + 1, target - 0.25, target, 10.0)
            sim.on_bar(away, RegularHours())  # the target fills while the hub is hung
            sim.user_hub.speak()
            await rec.wait(lambda: d.venue.connected, 15, "the session back")
            await rec.wait(lambda: bool(rec.of(o.child_id("stop"), OrderCancelled)), 5, "oco")
            assert d.px.reconnects == 1
            assert len(sim.orders) == orders  # no order placed again
            (tfill,) = rec.of(o.child_id("target"), OrderFilled)
            assert isinstance(tfill, OrderFilled) and tfill.quantity == 2
            for cid in (o.client_order_id, o.child_id("stop"), o.child_id("target")):
                assert len(rec.of(cid, OrderSubmitted)) == 1  # nothing sent twice
            assert d.venue.positions() == [] and d.venue.working_orders() == []
            assert_reconciles(d.venue, rec.events, INSTRUMENTS)
        finally:
            sim.user_hub.speak()
            await d.close()

    asyncio.run(scenario())


def test_the_feed_stays_up_without_trades_and_resubscribes_after_a_silence() -> None:
    async def scenario() -> None:
        sim = ProjectxSimulator(INSTRUMENTS)
        sim.market_hub.keepalive_s = PING_S
        await sim.start()
        feed = ProjectxFeed(
            ("ES",), settings_for(sim, connect_timeout_s=1.0, **WATCH), retry_s=0.05
        )
        es = sim.contracts["ES"]["id"]
        try:
            await check_feed_silence(
                FeedSilence(
                    feed,
                    ("projectx", "market"),
                    subscribed=lambda: sim.market_hub.has(f"ContractTrades:{es}"),
                    publish_bar=sim.publish_bar,
                    idle=lambda: idle_for(lambda: sim.market_hub.pings_sent, PINGS, BOUND_S),
                    silence=sim.market_hub.silence,
                    speak=sim.market_hub.speak,
                    bound_s=BOUND_S,
                    early_s=PING_S,
                ),
                T0,
            )
        finally:
            await sim.stop()

    asyncio.run(scenario())
