"""`ib` and `--feed ib` when the gateway hangs: the API socket open, nothing answered or sent.

TWS sends nothing on an idle connection, so the venue and the feed ask the
gateway's clock after a third of `IB_SILENCE_TIMEOUT_S` of quiet; the simulator's
`silence` keeps connections open but reads and drops everything and writes nothing.
"""

from __future__ import annotations

import asyncio

from tests.trader.venues import silence as hush
from tests.trader.venues.ib.driver import INSTRUMENTS, T0, RegularHours, start_ib
from trader.feeds.ib import IbFeed
from trader.venues.sims.ib import IbSimulator

BOUND_S = 1.5
EARLY_S = BOUND_S / 3  # the clock is asked after a third of the bound of quiet
ASKS = 5  # clock questions answered: more than the bound at one a third of it


def test_a_silent_gateway_is_noticed_within_the_bound_and_the_bracket_reconciles() -> None:
    async def scenario() -> None:
        d = await start_ib(silence_timeout_s=BOUND_S, watch_s=0.02, connect_timeout_s=1.0)
        await hush.check_venue_silence(
            hush.VenueSilence(
                d,
                lambda: hush.silences("ib", "api"),
                1,
                lambda: d.ib_venue.reconnects,
                lambda: hush.idle_for(lambda: d.sim.clock_asks, ASKS, BOUND_S),
                d.sim,
                RegularHours(),
                BOUND_S,
                EARLY_S,
            ),
            "hush-entry",
        )

    asyncio.run(scenario())


def test_the_feed_stays_up_without_bars_and_resubscribes_after_a_silence() -> None:
    async def scenario() -> None:
        sim = IbSimulator(INSTRUMENTS)
        await sim.start()
        watch = {"silence_timeout_s": BOUND_S, "watch_s": 0.02, "connect_timeout_s": 1.0}
        feed = IbFeed(("ES",), port=sim.port, client_id=32, retry_s=0.05, **watch)
        try:
            await hush.check_feed_silence(
                hush.FeedSilence(
                    feed,
                    ("ib", "api"),
                    lambda: len(sim.bar_subscribers.get("ES", [])) == 1,
                    sim,
                    lambda: hush.idle_for(lambda: sim.clock_asks, ASKS, BOUND_S),
                    sim,
                    BOUND_S,
                    EARLY_S,
                ),
                T0,
            )
        finally:
            await sim.stop()

    asyncio.run(scenario())
