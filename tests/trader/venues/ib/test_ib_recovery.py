"""The trading process on `ib`: reconciliation after a gateway restart and after a kill -9.

In-process engine and recovery (journal, adoption, reconciliation) on an `IbVenue`
talking to the simulator over loopback; the sim feed's bars go to both, with a
`reqCurrentTime` round trip before and after each bar so the gateway has read the
trader's orders and the trader has read the gateway's answers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from infra.contracts import OrderFilled, PositionReconciled, TradeOutcome
from infra.settings import Settings
from tests.trader.venues.ib.driver import RegularHours, start_ib
from trader.core.engine import Engine, EngineConfig
from trader.feeds.sim import SimFeed
from trader.recovery import Recovery
from trader.venues.ib import IbVenue
from trader.venues.sims.ib import IbSimulator


def _trader(venue: IbVenue, state: Path, run_id: str, out: list[Any]) -> tuple[Engine, Recovery]:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    engine = Engine(
        settings,
        EngineConfig(symbols=("ES", "NQ"), source="sim", run_id=run_id, record_metrics=False),
        sinks=[lambda _topic, e: out.append(e)],
        venue=venue,
    )
    return engine, Recovery(settings, engine, state_dir=state)


async def _bar(
    venue: IbVenue, sim: IbSimulator, engine: Engine, recovery: Recovery, bar: Any
) -> None:
    await asyncio.wait_for(venue.ib.reqCurrentTimeAsync(), 5)  # the gateway read our orders
    sim.on_bar(bar, RegularHours())
    await asyncio.wait_for(venue.ib.reqCurrentTimeAsync(), 5)  # we read its answers
    engine.on_bar(bar)
    recovery.after_bar()


def test_gateway_restart_then_kill9_reconcile_and_the_trade_exits_in_the_next_process(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        bars = list(SimFeed(("ES", "NQ"), seed=7, days=1, session="rth"))
        d = await start_ib(client_id=21)
        sim, venue1 = d.sim, d.ib_venue
        out1: list[Any] = []
        engine1, rec1 = _trader(venue1, tmp_path, "run1", out1)
        assert rec1.start().clean
        i = 0
        while not venue1.positions() or len(venue1.working_orders()) < 2:
            await _bar(venue1, sim, engine1, rec1, bars[i])
            i += 1
            assert i < 300, "no position within 300 bars"
        (pos,) = venue1.positions()
        # the nightly restart: the gateway goes away and comes back; the process reconciles
        seen = len(out1)
        await sim.stop()
        await d.barrier()
        await sim.start()
        for _ in range(200):
            if venue1.connected:
                break
            await asyncio.sleep(0.02)  # the reconnect loop runs on the event loop
        assert venue1.connected and venue1.reconnects == 1
        rec1.after_bar()
        assert rec1.last is not None and rec1.last.clean
        after = {e.symbol: e for e in out1[seen:] if isinstance(e, PositionReconciled)}
        assert {s: r.status for s, r in after.items()} == {"ES": "matched", "NQ": "matched"}
        assert after[pos.symbol].quantity == pos.quantity
        # kill -9: the process vanishes without flattening
        await venue1.disconnect()  # gone without flattening; its orders stay at the gateway
        fresh = await start_ib(client_id=21, sim=sim)
        venue2 = fresh.ib_venue
        out2: list[Any] = []
        engine2, rec2 = _trader(venue2, tmp_path, "run2", out2)
        start = rec2.start()
        assert start.clean, start.status()
        assert rec2.restored and rec2.adopted == rec2.restored
        entry_id = rec2.restored[0]
        while not any(isinstance(e, TradeOutcome) and not e.counterfactual for e in out2):
            await _bar(venue2, sim, engine2, rec2, bars[i])
            i += 1
            assert i < len(bars), "the adopted trade never exited"
        (outcome,) = [e for e in out2 if isinstance(e, TradeOutcome) and not e.counterfactual]
        assert outcome.entry_order_id == entry_id and outcome.run_id == "run2"
        (exit_fill,) = [
            e
            for e in out2
            if isinstance(e, OrderFilled) and e.client_order_id == outcome.exit_order_id
        ]
        assert exit_fill.venue == "ib" and exit_fill.fill_price == outcome.exit_price
        await fresh.venue.disconnect()
        await d.close()

    asyncio.run(scenario())
