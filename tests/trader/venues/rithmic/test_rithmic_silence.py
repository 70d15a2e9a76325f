"""`rithmic` and `--feed rithmic` when the gateway hangs: websockets open, nothing answered.

The simulator's `silence` drops every request and heartbeat of its plants and
writes nothing, while the TLS websockets stay open. The venue and the feed hear
only heartbeat answers while idle and stay up; once silent past the bound
(3 heartbeat intervals) they close the session and log in again, and what the
market did meanwhile comes back through the catch-up.
"""

from __future__ import annotations

import asyncio

from tests.trader.venues import silence as hush
from tests.trader.venues.rithmic.driver import (
    INSTRUMENTS,
    T0,
    RegularHours,
    settings_for,
    start_rithmic,
)
from trader.feeds.rithmic import RithmicFeed
from trader.venues.rithmic_watch import SILENCE_HEARTBEATS, PlantWatch
from trader.venues.sims.rithmic import RithmicSimulator

#: the simulator's heartbeat interval (the watch sends a heartbeat after one of quiet)
HEARTBEAT_S = 1.25
BOUND_S = SILENCE_HEARTBEATS * HEARTBEAT_S
BEATS = int(SILENCE_HEARTBEATS) + 2  # heartbeats answered: one per interval at most


def _silences() -> float:
    return hush.silences("rithmic", "order") + hush.silences("rithmic", "pnl")


async def _idle_past_the_bound(sim: RithmicSimulator, plant: str) -> float:
    """Wait until `plant` has answered heartbeats for longer than the bound; return the seconds."""
    (session,) = [s for s in sim.gateway.sessions if s.plant_name == plant]
    return await hush.idle_for(lambda: session.heartbeats, BEATS, BOUND_S)


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
        await hush.check_venue_silence(
            hush.VenueSilence(
                d,
                _silences,
                2,  # the order and PnL plants
                lambda: d.rt.reconnects,
                lambda: _idle_past_the_bound(sim, "order"),
                sim,
                RegularHours(),
                BOUND_S,
                HEARTBEAT_S,
            ),
            "quiet-entry",
        )

    asyncio.run(go())


def test_the_feed_stays_up_without_trades_and_logs_in_again_after_a_silence() -> None:
    async def go() -> None:
        sim = RithmicSimulator(INSTRUMENTS, heartbeat_interval_s=HEARTBEAT_S)
        await sim.start()
        feed = RithmicFeed(("ES",), settings_for(sim, connect_timeout_s=2.0), retry_s=0.05)
        try:
            await hush.check_feed_silence(
                hush.FeedSilence(
                    feed,
                    ("rithmic", "ticker"),
                    lambda: sim.sessions("ticker") == 1 and sim.has_market_data("ES"),
                    sim,
                    lambda: _idle_past_the_bound(sim, "ticker"),
                    sim,
                    BOUND_S,
                    HEARTBEAT_S,
                ),
                T0,
            )
        finally:
            await sim.stop()
            sim.close()

    asyncio.run(go())
