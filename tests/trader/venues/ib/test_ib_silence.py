"""`ib` when the gateway hangs: the API socket open, nothing answered or sent.

TWS sends nothing on an idle connection, so the venue asks the gateway's clock
after a third of `IB_SILENCE_TIMEOUT_S` of quiet; the simulator's `silence`
keeps connections open but reads and drops everything and writes nothing.
"""

from __future__ import annotations

import asyncio
import time

from infra.contracts import OrderCancelled, OrderFilled, OrderSubmitted
from tests.helpers import wait_until_async
from tests.trader.venues.conformance import Recorder, _bracket, _filled_bracket
from tests.trader.venues.ib.driver import INSTRUMENTS, RegularHours, start_ib
from trader import metrics
from trader.core.bar import MarketBar
from trader.venues.base import ConnectionState
from trader.venues.ledger import Ledger
from trader.venues.reconcile import known_order_ids, reconcile

BOUND_S = 1.5
#: what may pass after the bound before the watch sees it (its poll, a loaded machine)
SLACK_S = 2.0


def _silences() -> float:
    labels = {"venue": "ib", "plant": "api"}
    return metrics.REGISTRY.get_sample_value("tradeloop_venue_silences_total", labels) or 0.0


def test_a_silent_gateway_is_noticed_within_the_bound_and_the_bracket_reconciles() -> None:
    async def scenario() -> None:
        d = await start_ib(silence_timeout_s=BOUND_S, watch_s=0.02, connect_timeout_s=1.0)
        rec = Recorder()
        d.venue.add_listener(rec)
        try:
            o = _bracket(d, "hush-entry", qty=2)
            _stop, target = await _filled_bracket(d, rec, o)
            await d.barrier()
            before, orders = _silences(), len(d.sim.orders)

            # idle: the watch's clock questions keep the connection for longer than the bound
            asks, start = d.sim.clock_asks, time.monotonic()
            await wait_until_async(lambda: d.sim.clock_asks >= asks + 5, 4 * BOUND_S, what="asks")
            assert time.monotonic() - start > BOUND_S
            assert d.venue.state is ConnectionState.CONNECTED and d.ib_venue.reconnects == 0
            assert _silences() == before

            d.sim.silence()
            silent_from = time.monotonic()
            await wait_until_async(
                lambda: d.venue.state is ConnectionState.CONNECTING,
                BOUND_S + SLACK_S,
                interval_s=0.01,
                what="the silence noticed",
            )
            noticed_s = time.monotonic() - silent_from
            assert BOUND_S - BOUND_S / 3 < noticed_s < BOUND_S + SLACK_S
            assert _silences() == before + 1

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
            ledger = Ledger({s: i.point_value_usd for s, i in INSTRUMENTS.items()})
            for e in rec.events:
                ledger.apply(e)
            result = reconcile(
                d.venue,
                ledger,
                known_ids=known_order_ids(rec.events),
                tick_sizes={s: i.tick_size for s, i in INSTRUMENTS.items()},
                symbols=("ES", "NQ"),
                trigger="reconnect",
            )
            assert result.clean, result.status()
        finally:
            d.sim.speak()
            await d.close()

    asyncio.run(scenario())
