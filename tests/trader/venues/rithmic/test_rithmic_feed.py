"""`--feed rithmic`: the ticker plant's trades from the simulator over async_rithmic, aggregated to minutes."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

from tests.helpers import wait_until_async
from tests.trader.venues.rithmic.driver import INSTRUMENTS, T0, settings_for
from trader.core.bar import MarketBar
from trader.feeds import open_feed
from trader.feeds.rithmic import RithmicFeed, bad_tick_reason
from trader.venues.sims.rithmic import RithmicSimulator


def test_bad_ticks_are_named() -> None:
    ok = {"trade_price": 5000.0, "trade_size": 1, "datetime": datetime.fromtimestamp(T0, UTC)}
    assert bad_tick_reason(ok, None, None) is None
    assert bad_tick_reason({**ok, "trade_price": math.inf}, None, None) == (
        "non-positive or non-finite price"
    )
    assert bad_tick_reason({**ok, "trade_size": -1}, None, None) == "bad size"
    assert bad_tick_reason({**ok, "datetime": "noon"}, None, None) == (
        "missing or unreadable price, size or time"
    )
    assert bad_tick_reason(ok, T0 + 60, None) == "timestamp out of order"


def test_the_feed_yields_the_simulators_minutes_skips_bad_trades_and_survives_a_restart() -> None:
    async def scenario() -> None:
        sim = RithmicSimulator(INSTRUMENTS)
        await sim.start()
        feed = RithmicFeed(("ES", "NQ"), settings_for(sim), retry_s=0.05)
        got: list[MarketBar] = []

        async def consume() -> None:
            async for bar in feed.aiter():
                got.append(bar)

        task = asyncio.create_task(consume())
        try:
            await wait_until_async(
                lambda: sim.has_market_data("ES") and sim.has_market_data("NQ"),
                10,
                what="the subscriptions",
            )
            assert sim.sessions("ticker") == 1 and sim.sessions("order") == 0
            sent = [
                MarketBar("ES", T0, 5000.0, 5002.0, 4999.0, 5001.0, 40.0),
                MarketBar("NQ", T0, 18000.0, 18010.0, 17990.0, 18005.0, 24.0),
            ]
            for bar in sent:
                sim.publish_bar(bar)
            await wait_until_async(lambda: len(got) == 2, 5, what="two minutes")
            assert [(b.symbol, b.ts_s, b.open, b.high, b.low, b.close, b.volume) for b in got] == [
                (b.symbol, b.ts_s, b.open, b.high, b.low, b.close, b.volume) for b in sent
            ]
            sim.publish_trade("ES", -1.0, 1, T0 + 1)
            sim.publish_trade("ES", 5001.0, 1, T0 - 30)
            await wait_until_async(
                lambda: sum(feed.stats.skipped_by_reason.values()) == 2, 5, what="two skips"
            )
            await sim.restart_gateway(0.1)
            await wait_until_async(
                lambda: feed.connected and sim.has_market_data("ES"), 10, what="the resubscription"
            )
            sim.publish_bar(MarketBar("ES", T0 + 120, 5001.0, 5003.0, 5000.0, 5002.0, 12.0))
            await wait_until_async(lambda: len(got) == 3, 5, what="the minute after the restart")
            assert (got[2].ts_s, got[2].close) == (T0 + 120, 5002.0)
            assert feed.stats.skipped_by_reason == {
                "non-positive or non-finite price": 1,
                "timestamp out of order": 1,
            }
        finally:
            await feed.aclose()
            await asyncio.wait_for(task, 5)
            await sim.stop()
            sim.close()

    asyncio.run(scenario())


def test_open_feed_knows_rithmic() -> None:
    feed = open_feed("rithmic", symbols=("ES",))
    assert isinstance(feed, RithmicFeed) and feed.live
