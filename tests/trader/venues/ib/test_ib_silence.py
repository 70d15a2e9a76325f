"""`ib` and `--feed ib` when the gateway hangs: the API socket open, nothing answered or sent.

TWS sends nothing on an idle connection, so the venue and the feed ask the
gateway's clock after a third of `IB_SILENCE_TIMEOUT_S` of quiet; the simulator's
`silence` keeps connections open but reads and drops everything and writes nothing.
"""

from __future__ import annotations

import asyncio

from infra.contracts import OrderCancelled, OrderFilled, OrderSubmitted
from tests.trader.venues.conformance import Recorder, _bracket, _filled_bracket
from tests.trader.venues.ib.driver import INSTRUMENTS, T0, RegularHours, start_ib
from tests.trader.venues.silence import (
    FeedSilence,
    assert_reconciles,
    check_feed_silence,
    idle_for,
    noticed_within,
    silences,
)
from trader.core.bar import MarketBar
from trader.feeds.ib import IbFeed
from trader.venues.base import ConnectionState
from trader.venues.sims.ib import IbSimulator

BOUND_S = 1.5
EARLY_S = BOUND_S / 3  # the clock is asked after a third of the bound of quiet
ASKS = 5  # clock questions answered: more than the bound at one a third of it


def test_a_silent_gateway_is_noticed_within_the_bound_and_the_bracket_reconciles() -> None:
    async def scenario() -> None:
        d = await start_ib(silence_timeout_s=BOUND_S, watch_s=0.02, connect_timeout_s=1.0)
        rec = Recorder()
        d.venue.add_listener(rec)
        try:
            o = _bracket(d, "hush-entry", qty=2)
            _stop, target = await _filled_bracket(d, rec, o)
            await d.barrier()
            before, orders = silences("ib", "api"), len(d.sim.orders)

            # idle: the watch's clock questions keep the connection for longer than the bound
            assert await idle_for(lambda: d.sim.clock_asks, ASKS, BOUND_S) > BOUND_S
            assert d.venue.state is ConnectionState.CONNECTED and d.ib_venue.reconnects == 0
            assert silences("ib", "api") == before

            d.sim.silence()
            await noticed_within(
                lambda: d.venue.state is ConnectionState.CONNECTING, BOUND_S, EARLY_S
            )
            assert silences("ib", "api") == before + 1

            away = MarketBar("ES", d.ts_s + 60, target, target + 1, target - 0.25, target, 10.0)
            d.sim.on_bar(away, RegularHours())  # the target fills while the gateway is hung
            d.sim.speak()
            await rec.wait(lambda: d.venue.connected, 15, "the session back")
            await rec.wait(lambda: bool(rec.of(o.child_id("stop"), OrderCancelled)), 5, "oco")
            assert d.ib_venue.reconnects == 1
            (tfill,) = rec.of(o.child_id("target"), OrderFilled)
            assert isinstance(tfill, OrderFilled) and tfill.quantity == 2
            assert len(d.sim.orders) == orders  # nothing sent twice
            for cid in (o.client_order_id, o.child_id("stop"), o.child_id("target")):
                assert len(rec.of(cid, OrderSubmitted)) == 1
            assert d.venue.positions() == [] and d.venue.working_orders() == []
            assert_reconciles(d.venue, rec.events, INSTRUMENTS)
        finally:
            d.sim.speak()
            await d.close()

    asyncio.run(scenario())


def test_the_feed_stays_up_without_bars_and_resubscribes_after_a_silence() -> None:
    async def scenario() -> None:
        sim = IbSimulator(INSTRUMENTS)
        await sim.start()
        feed = IbFeed(
            ("ES",),
            port=sim.port,
            client_id=32,
            connect_timeout_s=1.0,
            retry_s=0.05,
            silence_timeout_s=BOUND_S,
            watch_s=0.02,
        )
        try:
            await check_feed_silence(
                FeedSilence(
                    feed,
                    ("ib", "api"),
                    subscribed=lambda: len(sim.bar_subscribers.get("ES", [])) == 1,
                    publish_bar=sim.publish_bar,
                    idle=lambda: idle_for(lambda: sim.clock_asks, ASKS, BOUND_S),
                    silence=sim.silence,
                    speak=sim.speak,
                    bound_s=BOUND_S,
                    early_s=EARLY_S,
                ),
                T0,
            )
        finally:
            await sim.stop()

    asyncio.run(scenario())
