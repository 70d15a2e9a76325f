"""The trading process on `rithmic`: reconciliation after a gateway restart and after a kill -9.

In-process engine and recovery (journal, adoption, reconciliation) on a
`RithmicVenue` talking to the simulator over TLS on loopback; the sim feed's bars
go to both, with the request queue drained before each bar (the gateway has the
trader's orders) and a show-orders round trip after it (the trader has the
gateway's notifications).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from infra.contracts import (
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    PositionReconciled,
    TradeOutcome,
)
from infra.settings import Settings
from tests.helpers import wait_until_async
from tests.trader.venues.rithmic.driver import RegularHours, RithmicDriver, start_rithmic
from trader.core.engine import Engine, EngineConfig
from trader.feeds.sim import SimFeed
from trader.recovery import Recovery
from trader.venues.rithmic import RithmicVenue


def _trader(
    venue: RithmicVenue, state: Path, run_id: str, out: list[Any]
) -> tuple[Engine, Recovery]:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    engine = Engine(
        settings,
        EngineConfig(symbols=("ES", "NQ"), source="sim", run_id=run_id, record_metrics=False),
        sinks=[lambda _topic, e: out.append(e)],
        venue=venue,
    )
    return engine, Recovery(settings, engine, state_dir=state)


async def _bar(d: RithmicDriver, engine: Engine, recovery: Recovery, bar: Any) -> None:
    await d.rt.drain()  # the gateway has answered our orders: it has them
    d.sim.on_bar(bar, RegularHours())
    await d.barrier()  # we have its notifications
    engine.on_bar(bar)
    recovery.after_bar()


def test_gateway_restart_then_kill9_reconcile_and_the_trade_exits_in_the_next_process(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        bars = list(SimFeed(("ES", "NQ"), seed=7, days=1, session="rth"))
        d = await start_rithmic()
        sim, venue1 = d.sim, d.rt
        out1: list[Any] = []
        engine1, rec1 = _trader(venue1, tmp_path, "run1", out1)
        assert rec1.start().clean
        i = 0

        def holding() -> bool:  # a position with its stop and target, no entry waiting
            ended = {
                e.client_order_id
                for e in out1
                if isinstance(e, OrderFilled | OrderCancelled | OrderRejected | OrderExpired)
            }
            waiting = [
                e
                for e in out1
                if isinstance(e, OrderSubmitted) and e.role == "entry"
                and e.client_order_id not in ended
            ]  # fmt: skip
            roles = sorted(w.role for w in venue1.working_orders())
            return bool(venue1.positions()) and roles == ["stop", "target"] and not waiting

        while not holding():
            await _bar(d, engine1, rec1, bars[i])
            i += 1
            assert i < 300, "no position within 300 bars"
        (pos,) = venue1.positions()
        # the gateway restarts: every plant drops, then it is back; the process reconciles
        seen = len(out1)
        await sim.restart_gateway(0.1)
        await wait_until_async(lambda: venue1.connected and venue1.reconnects == 1, 10, what="back")
        rec1.after_bar()
        assert rec1.last is not None and rec1.last.clean
        after = {e.symbol: e for e in out1[seen:] if isinstance(e, PositionReconciled)}
        assert {s: r.status for s, r in after.items()} == {"ES": "matched", "NQ": "matched"}
        assert after[pos.symbol].quantity == pos.quantity
        # kill -9: the process is gone without flattening; its orders stay at the gateway
        await venue1.disconnect()
        fresh = await start_rithmic(sim=sim)
        venue2 = fresh.rt
        out2: list[Any] = []
        engine2, rec2 = _trader(venue2, tmp_path, "run2", out2)
        start = rec2.start()
        assert start.clean, start.status()
        assert rec2.restored and rec2.adopted == rec2.restored
        entry_id = rec2.restored[0]
        while not any(isinstance(e, TradeOutcome) and not e.counterfactual for e in out2):
            await _bar(fresh, engine2, rec2, bars[i])
            i += 1
            assert i < len(bars), "the adopted trade never exited"
        (outcome,) = [e for e in out2 if isinstance(e, TradeOutcome) and not e.counterfactual]
        assert outcome.entry_order_id == entry_id and outcome.run_id == "run2"
        (exit_fill,) = [
            e
            for e in out2
            if isinstance(e, OrderFilled) and e.client_order_id == outcome.exit_order_id
        ]
        assert exit_fill.venue == "rithmic" and exit_fill.fill_price == outcome.exit_price
        await venue2.disconnect()
        await d.close()

    asyncio.run(scenario())
