"""`rithmic` after a lost session: the gateway restarts, or the process dies, while the market moves.

Fills, the OCO cancel and the children placed meanwhile come back from the order
history, the fill history and the PnL plant's positions; what the venue publishes
then rebuilds a ledger that reconciles clean against it.
"""

from __future__ import annotations

import asyncio

import pytest

from infra.contracts import OrderAccepted, OrderCancelled, OrderFilled, OrderSubmitted
from tests.trader.venues.conformance import Recorder
from tests.trader.venues.rithmic.driver import INSTRUMENTS, RegularHours, start_rithmic
from trader.core.bar import MarketBar
from trader.venues.base import BracketOrder, ConnectionState, DuplicateClientOrderId
from trader.venues.ledger import Ledger
from trader.venues.reconcile import known_order_ids, reconcile
from trader.venues.rithmic import RithmicVenue


def _reconciled(venue: RithmicVenue, events: list[object]) -> bool:
    ledger = Ledger({s: i.point_value_usd for s, i in INSTRUMENTS.items()})
    for e in events:
        ledger.apply(e)  # type: ignore[arg-type]
    result = reconcile(
        venue,
        ledger,
        known_ids=known_order_ids(events),  # type: ignore[arg-type]
        tick_sizes={s: i.tick_size for s, i in INSTRUMENTS.items()},
        symbols=("ES", "NQ"),
        trigger="reconnect",
    )
    assert result.clean, result.status()
    return result.clean


def test_a_gateway_restart_with_the_target_filled_meanwhile_catches_up_and_reconciles() -> None:
    async def go() -> None:
        d = await start_rithmic()
        try:
            rec = Recorder()
            d.venue.add_listener(rec)
            d.venue.submit_bracket(
                BracketOrder("gw-entry", "ES", "buy", 2, stop_distance=4.0, target_distance=8.0)
            )
            p = d.start_price
            await d.bar(p, p + 0.25, p - 0.25, p)
            await rec.wait(lambda: len(d.venue.working_orders()) == 2, 5, "the children")
            target = next(w for w in d.venue.working_orders() if w.role == "target")
            assert target.limit_price is not None
            logins = d.sim.gateway.logins
            await d.sim.stop()
            await rec.wait(lambda: d.venue.state is ConnectionState.CONNECTING, 5, "reconnecting")
            t = target.limit_price
            away = MarketBar("ES", d.ts_s + 60, t, t + 1, t - 0.25, t + 0.5, 10.0)
            d.sim.on_bar(away, RegularHours())  # the target fills while the trader is away
            await d.sim.start()
            await rec.wait(lambda: d.venue.connected, 10, "the session back")
            assert d.sim.gateway.logins == logins + 2  # order and PnL plants
            assert d.rt.reconnects == 1
            (tfill,) = rec.of("gw-target", OrderFilled)
            assert isinstance(tfill, OrderFilled) and tfill.quantity == 2 and tfill.fill_price == t
            (oco,) = rec.of("gw-stop", OrderCancelled)
            assert isinstance(oco, OrderCancelled) and oco.reason == "oco"
            kinds = [type(e).__name__ for e in rec.events]
            assert kinds.index("OrderFilled", kinds.index("OrderFilled") + 1) < len(kinds) - 1
            assert d.venue.positions() == [] and d.venue.working_orders() == []
            assert _reconciled(d.rt, rec.events)
            # live again: a new bracket trades through the new session
            d.venue.submit_bracket(
                BracketOrder("gw2-entry", "ES", "sell", 1, stop_distance=4.0, target_distance=8.0)
            )
            await d.bar(p, p + 0.25, p - 0.25, p)
            await rec.wait(lambda: len(d.venue.working_orders()) == 2, 5, "new children")
            assert [(x.symbol, x.quantity) for x in d.venue.positions()] == [("ES", -1)]
            assert _reconciled(d.rt, rec.events)
        finally:
            await d.close()

    asyncio.run(go())


def test_a_restarted_process_restores_its_brackets_and_learns_what_filled_while_it_was_dead() -> (
    None
):
    async def go() -> None:
        d = await start_rithmic()
        rec = Recorder()
        d.venue.add_listener(rec)
        try:
            held = BracketOrder(
                "keep-entry", "ES", "buy", 1, stop_distance=4.0, target_distance=8.0
            )
            gone = BracketOrder(
                "gone-entry", "ES", "sell", 1, stop_distance=4.0, target_distance=8.0
            )
            d.venue.submit_bracket(held)
            d.venue.submit_bracket(gone)
            p = d.start_price
            await d.bar(p, p + 0.25, p - 0.25, p)
            await rec.wait(lambda: len(d.venue.working_orders()) == 4, 5, "both brackets' children")
            await d.venue.disconnect()  # the process is gone without flattening
            (gone_stop,) = rec.of("gone-stop", OrderSubmitted)
            assert isinstance(gone_stop, OrderSubmitted) and gone_stop.stop_price is not None
            up = gone_stop.stop_price  # the short's stop fills; the long's target is far above
            d.sim.on_bar(
                MarketBar("ES", d.ts_s + 60, up, up + 0.25, up - 0.25, up, 10.0), RegularHours()
            )
            fresh = await start_rithmic(sim=d.sim)
            after = Recorder()
            fresh.venue.add_listener(after)
            try:
                assert fresh.rt.restore(rec.events) == ["keep-entry"]
                (sfill,) = after.of("gone-stop", OrderFilled)
                assert isinstance(sfill, OrderFilled) and sfill.commission_usd == pytest.approx(
                    2.25
                )
                (oco,) = after.of("gone-target", OrderCancelled)
                assert isinstance(oco, OrderCancelled) and oco.reason == "oco"
                assert not after.of("keep-entry")  # nothing new about the held bracket
                assert {w.client_order_id for w in fresh.venue.working_orders()} == {
                    "keep-stop",
                    "keep-target",
                }
                assert [(x.symbol, x.quantity) for x in fresh.venue.positions()] == [("ES", 1)]
                assert _reconciled(fresh.rt, [*rec.events, *after.events])
                with pytest.raises(DuplicateClientOrderId):
                    fresh.venue.submit_bracket(held)
                fresh.venue.modify("keep-stop", stop_price=p - 10.0)
                await after.wait(lambda: bool(after.of("keep-stop", OrderAccepted)), 5, "modify")
                assert d.sim.orders[
                    fresh.venue.working_orders()[0].venue_order_id
                ].trigger_price in (
                    p - 10.0,
                    0.0,
                )
                fresh.venue.flatten("ES", reason="operator")
                await after.wait(lambda: bool(after.of("keep-flatten", OrderFilled)), 5, "flatten")
                await after.wait(lambda: fresh.venue.positions() == [], 5, "flat")
                await after.wait(lambda: fresh.venue.working_orders() == [], 5, "the cancels")
                (flat,) = after.of("keep-flatten", OrderFilled)
                assert isinstance(flat, OrderFilled) and flat.side == "sell"
            finally:
                await fresh.venue.disconnect()
        finally:
            await d.close()

    asyncio.run(go())
