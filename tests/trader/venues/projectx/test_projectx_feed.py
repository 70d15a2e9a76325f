"""`--feed projectx`: the market hub's trades from the simulator over signalrcore, aggregated to minutes."""

from __future__ import annotations

import asyncio
import math

from tests.helpers import wait_until_async
from tests.trader.venues.projectx.driver import INSTRUMENTS, T0, settings_for
from trader.core.bar import MarketBar
from trader.feeds import open_feed
from trader.feeds.projectx import MinuteTrades, ProjectxFeed, bad_trade_reason
from trader.venues.sims.projectx import ProjectxSimulator


def _iso(t_s: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t_s, UTC).isoformat()


def test_trades_aggregate_to_the_minute_closed_by_its_last_second_or_the_next_minute() -> None:
    agg = MinuteTrades()
    start = T0 - 60
    assert agg.push("ES", start, 5000.0, 3) == []
    assert agg.push("ES", start + 20, 5003.0, 2) == []
    assert agg.push("ES", start + 40, 4998.5, 1) == []
    (bar,) = agg.push("ES", start + 59, 5001.25, 4)
    assert (bar.ts_s, bar.open, bar.high, bar.low, bar.close, bar.volume) == (
        T0, 5000.0, 5003.0, 4998.5, 5001.25, 10.0,
    )  # fmt: skip
    assert agg.push("ES", T0 + 5, 1.0, 1) == []
    (short,) = agg.push("ES", T0 + 61, 2.0, 1)  # the next minute's first trade ends it
    assert (short.ts_s, short.open, short.close) == (T0 + 60, 1.0, 1.0)


def test_bad_trades_are_named() -> None:
    ok = {"price": 5000.0, "volume": 1, "timestamp": _iso(T0)}
    assert bad_trade_reason(ok, None, None) is None
    assert bad_trade_reason({**ok, "price": math.nan}, None, None) == (
        "non-positive or non-finite price"
    )
    assert bad_trade_reason({**ok, "price": 0}, None, None) == "non-positive or non-finite price"
    assert bad_trade_reason({**ok, "volume": -2}, None, None) == "bad volume"
    assert bad_trade_reason({**ok, "timestamp": "yesterday"}, None, None) == (
        "missing or unreadable price, volume or timestamp"
    )
    assert bad_trade_reason(ok, T0 + 60, None) == "timestamp out of order"
    assert bad_trade_reason("x", None, None) == "not a trade record"


def test_the_feed_yields_the_simulators_minutes_skips_bad_trades_and_survives_a_restart() -> None:
    async def scenario() -> None:
        sim = ProjectxSimulator(INSTRUMENTS)
        await sim.start()
        feed = ProjectxFeed(("ES", "NQ"), settings_for(sim), retry_s=0.05)
        got: list[MarketBar] = []

        async def consume() -> None:
            async for bar in feed.aiter():
                got.append(bar)

        task = asyncio.create_task(consume())
        es, nq = sim.contracts["ES"]["id"], sim.contracts["NQ"]["id"]
        try:
            await wait_until_async(
                lambda: (
                    sim.market_hub.has(f"ContractTrades:{es}")
                    and sim.market_hub.has(f"ContractTrades:{nq}")
                ),
                5,
                what="the subscriptions",
            )
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
            sim.publish_trades("ES", [{"price": -1.0, "volume": 1, "timestamp": _iso(T0 + 1)}])
            sim.publish_trades("ES", [{"price": 5001.0, "volume": 1, "timestamp": _iso(T0 - 30)}])
            await wait_until_async(
                lambda: sum(feed.stats.skipped_by_reason.values()) == 2, 5, what="two skips"
            )
            await sim.restart_gateway(0.1)
            await wait_until_async(
                lambda: feed.connected and sim.market_hub.has(f"ContractTrades:{es}"),
                5,
                what="the resubscription",
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

    asyncio.run(scenario())


def test_open_feed_knows_projectx() -> None:
    feed = open_feed("projectx", symbols=("ES",))
    assert isinstance(feed, ProjectxFeed) and feed.live
