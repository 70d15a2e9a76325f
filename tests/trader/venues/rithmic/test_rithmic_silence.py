"""`rithmic` and `--feed rithmic` when the gateway hangs: websockets open, nothing answered.

The simulator's `silence` drops every request and heartbeat of its plants and
writes nothing, while the TLS websockets stay open. The venue and the feed hear
only heartbeat answers while idle and stay up; once silent past the bound
(3 heartbeat intervals) they close the session and log in again, and what the
market did meanwhile comes back through the catch-up.
"""

from __future__ import annotations

import asyncio

from infra.contracts import OrderCancelled, OrderFilled, OrderSubmitted
from tests.trader.venues.conformance import Recorder, _bracket, _filled_bracket
from tests.trader.venues.rithmic.driver import (
    INSTRUMENTS,
    T0,
    RegularHours,
    settings_for,
    start_rithmic,
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
from trader.feeds.rithmic import RithmicFeed
from trader.venues.base import ConnectionState
from trader.venues.rithmic_watch import SILENCE_HEARTBEATS, PlantWatch
from trader.venues.sims.rithmic import RithmicSimulator

#: the simulator's heartbeat interval (the watch sends a heartbeat after one of quiet)
HEARTBEAT_S = 1.25
BOUND_S = SILENCE_HEARTBEATS * HEARTBEAT_S
BEATS = int(SILENCE_HEARTBEATS) + 2  # heartbeats answered: one per interval at most


def _silences() -> float:
    return silences("rithmic", "order") + silences("rithmic", "pnl")


async def _idle_past_the_bound(sim: RithmicSimulator, plant: str) -> float:
    """Wait until `plant` has answered heartbeats for longer than the bound; return the seconds."""
    (session,) = [s for s in sim.gateway.sessions if s.plant_name == plant]
    return await idle_for(lambda: session.heartbeats, BEATS, BOUND_S)


def test_the_bound_is_three_heartbeat_intervals_or_the_setting_at_least_two() -> None:
    async def go() -> None:
        sim = RithmicSimulator(INSTRUMENTS, heartbeat_interval_s=HEARTBEAT_S)
        await sim.start()
        d = await start_rithmic(sim=sim)
        try:
            client = d.rt.client
            assert client is not None
            assert PlantWatch(client, ("order",)).bound_s("order") == BOUND_S
            assert PlantWatch(client, ("order",), 10.0).bound_s("order") == 10.0
            assert PlantWatch(client, ("order",), 1.0).bound_s("order") == 2 * HEARTBEAT_S
        finally:
            await d.close()

    asyncio.run(go())


def test_a_silent_gateway_is_noticed_within_the_bound_and_the_bracket_reconciles() -> None:
    async def go() -> None:
        sim = RithmicSimulator(
            INSTRUMENTS,
            slippage_ticks=1,
            commission_per_contract_usd=2.25,
            heartbeat_interval_s=HEARTBEAT_S,
        )
        await sim.start()
        d = await start_rithmic(sim=sim, connect_timeout_s=2.0, request_timeout_s=1.5)
        try:
            rec = Recorder()
            d.venue.add_listener(rec)
            o = _bracket(d, "quiet-entry", qty=2)
            _stop, t = await _filled_bracket(d, rec, o)
            before = _silences()

            # idle, nothing but heartbeat answers for longer than the bound: still up
            assert await _idle_past_the_bound(sim, "order") > BOUND_S
            assert d.venue.state is ConnectionState.CONNECTED and d.rt.reconnects == 0
            assert _silences() == before

            sim.silence()
            await noticed_within(
                lambda: d.venue.state is ConnectionState.CONNECTING, BOUND_S, HEARTBEAT_S
            )
            assert _silences() > before

            away = MarketBar("ES", d.ts_s + 60, t, t + 1, t - 0.25, t + 0.5, 10.0)
            sim.on_bar(away, RegularHours())  # the target fills while the gateway says nothing
            sim.speak()
            await rec.wait(lambda: d.venue.connected, 15, "the session back")
            assert d.rt.reconnects == 1
            (tfill,) = rec.of("quiet-target", OrderFilled)
            assert isinstance(tfill, OrderFilled) and tfill.quantity == 2 and tfill.fill_price == t
            (oco,) = rec.of("quiet-stop", OrderCancelled)
            assert isinstance(oco, OrderCancelled) and oco.reason == "oco"
            assert len(sim.orders) == 3  # entry, stop, target: nothing sent twice
            for cid in ("quiet-entry", "quiet-stop", "quiet-target"):
                assert len(rec.of(cid, OrderSubmitted)) == 1
            assert d.venue.positions() == [] and d.venue.working_orders() == []
            assert_reconciles(d.venue, rec.events, INSTRUMENTS)
        finally:
            sim.speak()
            await d.close()

    asyncio.run(go())


def test_the_feed_stays_up_without_trades_and_logs_in_again_after_a_silence() -> None:
    async def go() -> None:
        sim = RithmicSimulator(INSTRUMENTS, heartbeat_interval_s=HEARTBEAT_S)
        await sim.start()
        feed = RithmicFeed(("ES",), settings_for(sim, connect_timeout_s=2.0), retry_s=0.05)
        try:
            await check_feed_silence(
                FeedSilence(
                    feed,
                    ("rithmic", "ticker"),
                    subscribed=lambda: sim.sessions("ticker") == 1 and sim.has_market_data("ES"),
                    publish_bar=sim.publish_bar,
                    idle=lambda: _idle_past_the_bound(sim, "ticker"),
                    silence=lambda: sim.silence("ticker"),
                    speak=sim.speak,
                    bound_s=BOUND_S,
                    early_s=HEARTBEAT_S,
                ),
                T0,
            )
        finally:
            await sim.stop()
            sim.close()

    asyncio.run(go())
