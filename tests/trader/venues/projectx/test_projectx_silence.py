"""`projectx` when the user hub hangs: the websocket open, nothing answered or sent.

The simulator's hub pings every session (as ASP.NET Core's SignalR does) and its
`silence` keeps sessions open while it reads and drops every record and writes
nothing; REST keeps answering.
"""

from __future__ import annotations

import asyncio
import time

from infra.contracts import OrderCancelled, OrderFilled, OrderSubmitted
from tests.helpers import wait_until_async
from tests.trader.venues.conformance import Recorder, _bracket, _filled_bracket
from tests.trader.venues.projectx.driver import INSTRUMENTS, RegularHours, start_projectx
from trader import metrics
from trader.core.bar import MarketBar
from trader.venues.base import ConnectionState
from trader.venues.ledger import Ledger
from trader.venues.reconcile import known_order_ids, reconcile
from trader.venues.sims.projectx import ProjectxSimulator

BOUND_S = 1.5
PING_S = 0.25  # the hub's keep-alive interval
#: what may pass after the bound before the watch sees it (its poll, a loaded machine)
SLACK_S = 2.0


def _silences() -> float:
    labels = {"venue": "projectx", "plant": "user"}
    return metrics.REGISTRY.get_sample_value("tradeloop_venue_silences_total", labels) or 0.0


def test_a_silent_user_hub_is_noticed_within_the_bound_and_the_bracket_reconciles() -> None:
    async def scenario() -> None:
        sim = ProjectxSimulator(INSTRUMENTS, slippage_ticks=1, commission_per_contract_usd=2.1)
        sim.user_hub.keepalive_s = PING_S
        await sim.start()
        d = await start_projectx(
            sim=sim,
            silence_timeout_s=BOUND_S,
            keepalive_s=60.0,
            watch_s=0.02,
            connect_timeout_s=1.0,
        )
        rec = Recorder()
        d.venue.add_listener(rec)
        try:
            o = _bracket(d, "calm-entry", qty=2)
            _stop, target = await _filled_bracket(d, rec, o)
            before, orders = _silences(), len(sim.orders)

            # idle: only the hub's pings arrive, for longer than the bound; still up
            pings, start = sim.user_hub.pings_sent, time.monotonic()
            wanted = pings + int(BOUND_S / PING_S) + 2
            await wait_until_async(lambda: sim.user_hub.pings_sent >= wanted, 4 * BOUND_S)
            assert time.monotonic() - start > BOUND_S
            assert d.venue.state is ConnectionState.CONNECTED and d.px.reconnects == 0
            assert _silences() == before

            sim.user_hub.silence()
            silent_from = time.monotonic()
            await wait_until_async(
                lambda: d.venue.state is ConnectionState.CONNECTING,
                BOUND_S + SLACK_S,
                interval_s=0.01,
                what="the silence noticed",
            )
            noticed_s = time.monotonic() - silent_from
            assert BOUND_S - PING_S < noticed_s < BOUND_S + SLACK_S
            assert _silences() == before + 1

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
            sim.user_hub.speak()
            await d.close()

    asyncio.run(scenario())
