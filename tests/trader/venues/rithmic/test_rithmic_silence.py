"""`rithmic` and `--feed rithmic` when the gateway hangs: websockets open, nothing answered.

The simulator's `silence` drops every request and heartbeat of its plants and
writes nothing, while the TLS websockets stay open. The venue and the feed hear
only heartbeat answers while idle and stay up; once silent past the bound
(3 heartbeat intervals) they close the session and log in again, and what the
market did meanwhile comes back through the catch-up.
"""

from __future__ import annotations

import asyncio
import time

from infra.contracts import OrderCancelled, OrderFilled, OrderSubmitted
from tests.helpers import wait_until_async
from tests.trader.venues.conformance import Recorder
from tests.trader.venues.rithmic.driver import (
    INSTRUMENTS,
    T0,
    RegularHours,
    settings_for,
    start_rithmic,
)
from tests.trader.venues.rithmic.test_rithmic_recovery import _reconciled
from trader import metrics
from trader.core.bar import MarketBar
from trader.feeds.rithmic import RithmicFeed
from trader.venues.base import BracketOrder, ConnectionState
from trader.venues.rithmic_watch import SILENCE_HEARTBEATS, PlantWatch
from trader.venues.sims.rithmic import RithmicSimulator

#: the simulator's heartbeat interval (the watch sends a heartbeat after one of quiet)
HEARTBEAT_S = 1.25
BOUND_S = SILENCE_HEARTBEATS * HEARTBEAT_S
#: what may pass after the bound before the watch sees it (its poll, a loaded machine)
SLACK_S = 2.0


def _silences(plant: str) -> float:
    labels = {"venue": "rithmic", "plant": plant}
    return metrics.REGISTRY.get_sample_value("tradeloop_venue_silences_total", labels) or 0.0


async def _idle_past_the_bound(sim: RithmicSimulator, plant: str) -> float:
    """Wait until `plant` has answered heartbeats for longer than the bound; return the seconds."""
    (session,) = [s for s in sim.gateway.sessions if s.plant_name == plant]
    start, beats = time.monotonic(), session.heartbeats
    wanted = beats + int(SILENCE_HEARTBEATS) + 2  # one per heartbeat interval at most
    await wait_until_async(lambda: session.heartbeats >= wanted, 3 * BOUND_S, what="heartbeats")
    return time.monotonic() - start


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
            d.venue.submit_bracket(
                BracketOrder("quiet-entry", "ES", "buy", 2, stop_distance=4.0, target_distance=8.0)
            )
            p = d.start_price
            await d.bar(p, p + 0.25, p - 0.25, p)
            await rec.wait(lambda: len(d.venue.working_orders()) == 2, 5, "the children")
            target = next(w for w in d.venue.working_orders() if w.role == "target")
            assert target.limit_price is not None
            before = _silences("order") + _silences("pnl")

            # idle, nothing but heartbeat answers for longer than the bound: still up
            assert await _idle_past_the_bound(sim, "order") > BOUND_S
            assert d.venue.state is ConnectionState.CONNECTED and d.rt.reconnects == 0
            assert _silences("order") + _silences("pnl") == before

            sim.silence()
            silent_from = time.monotonic()
            await wait_until_async(
                lambda: d.venue.state is ConnectionState.CONNECTING,
                BOUND_S + SLACK_S,
                interval_s=0.01,
                what="the silence noticed",
            )
            noticed_s = time.monotonic() - silent_from
            assert BOUND_S - HEARTBEAT_S < noticed_s < BOUND_S + SLACK_S
            assert _silences("order") + _silences("pnl") > before

            t = target.limit_price
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
            assert _reconciled(d.rt, rec.events)
        finally:
            sim.speak()
            await d.close()

    asyncio.run(go())


def test_the_feed_stays_up_without_trades_and_logs_in_again_after_a_silence() -> None:
    async def go() -> None:
        sim = RithmicSimulator(INSTRUMENTS, heartbeat_interval_s=HEARTBEAT_S)
        await sim.start()
        feed = RithmicFeed(("ES",), settings_for(sim, connect_timeout_s=2.0), retry_s=0.05)
        got: list[MarketBar] = []

        async def consume() -> None:
            async for bar in feed.aiter():
                got.append(bar)

        task = asyncio.create_task(consume())
        try:
            await wait_until_async(lambda: sim.has_market_data("ES"), 10, what="subscribed")
            sim.publish_bar(MarketBar("ES", T0, 5000.0, 5002.0, 4999.0, 5001.0, 40.0))
            await wait_until_async(lambda: len(got) == 1, 5, what="the first minute")

            # no trades (the market closed): heartbeat answers keep the session
            assert await _idle_past_the_bound(sim, "ticker") > BOUND_S
            assert feed.connected and feed.silences == 0

            sim.silence("ticker")
            silent_from = time.monotonic()
            await wait_until_async(
                lambda: feed.silences == 1, BOUND_S + SLACK_S, interval_s=0.01, what="noticed"
            )
            assert BOUND_S - HEARTBEAT_S < time.monotonic() - silent_from < BOUND_S + SLACK_S
            sim.speak()
            await wait_until_async(
                lambda: (
                    feed.connected and sim.sessions("ticker") == 1 and sim.has_market_data("ES")
                ),
                15,
                what="subscribed again",
            )
            sim.publish_bar(MarketBar("ES", T0 + 60, 5001.0, 5003.0, 5000.0, 5002.0, 12.0))
            await wait_until_async(lambda: len(got) == 2, 5, what="the minute after the silence")
            assert (got[1].ts_s, got[1].close) == (T0 + 60, 5002.0)
            assert feed.silences == 1 and feed.describe()["silences"] == 1
        finally:
            sim.speak()
            await feed.aclose()
            await asyncio.wait_for(task, 5)
            await sim.stop()
            sim.close()

    asyncio.run(go())
