"""`--feed ib`: real-time bars from the simulator over ib_async, aggregated back to minutes."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

from ib_async import RealTimeBar

from tests.helpers import wait_until_async
from tests.trader.venues.ib.driver import INSTRUMENTS, T0
from trader.core.bar import MarketBar
from trader.feeds.ib import IbFeed, MinuteBars, bad_bar_reason
from trader.venues.sims import ib_wire as w
from trader.venues.sims.ib import IbSimulator


def test_twelve_five_second_bars_aggregate_back_to_the_minute() -> None:
    agg = MinuteBars()
    out: list[MarketBar] = []
    for fields in w.realtime_bars(T0 - 60, 5000.0, 5003.0, 4998.5, 5001.25, 123):
        t, o, h, lo, c, v = fields[:6]
        out += agg.push("ES", int(t), float(o), float(h), float(lo), float(c), float(v))
    (bar,) = out
    assert (bar.ts_s, bar.open, bar.high, bar.low, bar.close, bar.volume) == (
        T0,
        5000.0,
        5003.0,
        4998.5,
        5001.25,
        123.0,
    )
    # a minute whose last 5 seconds are missing ends when the next minute begins
    assert agg.push("ES", T0 + 5, 1.0, 2.0, 0.5, 1.5, 1.0) == []
    (short,) = agg.push("ES", T0 + 60, 1.5, 1.5, 1.5, 1.5, 1.0)
    assert (short.ts_s, short.open, short.high, short.low, short.close) == (
        T0 + 60,
        1.0,
        2.0,
        0.5,
        1.5,
    )


def test_bad_real_time_bars_are_named() -> None:
    t = datetime.fromtimestamp(T0, UTC)

    def rt(o: float, h: float, lo: float, c: float, v: float = 1.0) -> RealTimeBar:
        return RealTimeBar(t, -1, o, h, lo, c, v, c, 1)

    assert bad_bar_reason(rt(1, 2, 0.5, 1.5), None) is None
    assert bad_bar_reason(rt(1, 2, 0.5, math.nan), None) == "non-positive or non-finite price"
    assert bad_bar_reason(rt(1, 2, 0.0, 1.5), None) == "non-positive or non-finite price"
    assert bad_bar_reason(rt(1, 0.5, 2, 1.5), None) == "high/low do not bound open/close"
    assert bad_bar_reason(rt(3, 2, 0.5, 1.5), None) == "high/low do not bound open/close"
    assert bad_bar_reason(rt(1, 2, 0.5, 1.5, -1), None) == "bad volume"
    assert bad_bar_reason(rt(1, 2, 0.5, 1.5), T0) == "timestamp out of order"


def test_the_feed_yields_the_simulators_minutes_skips_bad_ones_and_survives_a_restart() -> None:
    async def scenario() -> None:
        sim = IbSimulator(INSTRUMENTS)
        await sim.start()
        feed = IbFeed(("ES", "NQ"), port=sim.port, client_id=31, retry_s=0.05)
        got: list[MarketBar] = []

        async def consume() -> None:
            async for bar in feed.aiter():
                got.append(bar)

        task = asyncio.create_task(consume())
        try:
            await wait_until_async(
                lambda: (
                    len(sim.bar_subscribers.get("ES", [])) == 1
                    and len(sim.bar_subscribers.get("NQ", [])) == 1
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
            # a bad minute (high below low) is skipped and counted, the next one arrives
            sim.publish_realtime("ES", [T0, 5001.0, 4990.0, 5010.0, 5001.0, 12, 5001.0, 1])
            sim.publish_realtime("ES", [T0 + 5, -1.0, 5001.0, 5000.0, 5001.0, 12, 5001.0, 1])
            await sim.restart_gateway(0.1)
            await wait_until_async(
                lambda: feed.connected and len(sim.bar_subscribers.get("ES", [])) == 1,
                5,
                what="the resubscription",
            )
            sim.publish_bar(MarketBar("ES", T0 + 120, 5001.0, 5003.0, 5000.0, 5002.0, 12.0))
            await wait_until_async(lambda: len(got) == 3, 5, what="the minute after the restart")
            assert (got[2].ts_s, got[2].close) == (T0 + 120, 5002.0)
            assert feed.stats.skipped_by_reason == {
                "high/low do not bound open/close": 1,
                "non-positive or non-finite price": 1,
            }
        finally:
            await feed.aclose()
            await task
            await sim.stop()

    asyncio.run(scenario())
