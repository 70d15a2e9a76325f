"""What is specific to `ib`: bracket wiring on the wire, faults, the reconnect state machine."""

from __future__ import annotations

import asyncio
import time

import pytest

from infra.contracts import (
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
)
from tests.trader.venues.conformance import Recorder, _bracket, _filled_bracket
from tests.trader.venues.ib.driver import INSTRUMENTS, IbDriver, RegularHours, start_ib
from trader.core.bar import MarketBar
from trader.venues.base import ConnectionState, VenueDisconnected
from trader.venues.ib import IbVenue, IbVenueSettings
from trader.venues.ledger import Ledger
from trader.venues.reconcile import known_order_ids, reconcile


async def _started() -> tuple[IbDriver, Recorder]:
    d = await start_ib()
    rec = Recorder()
    d.venue.add_listener(rec)
    return d, rec


def test_a_bracket_is_parent_stop_and_target_with_transmit_on_the_last_child() -> None:
    async def scenario() -> None:
        d, rec = await _started()
        try:
            o = _bracket(d, "wire-entry", qty=2)
            d.venue.submit_bracket(o)
            await d.barrier()
            parent, stop, target = sorted(d.sim.orders.values(), key=lambda x: x.placed.order_id)
            assert (parent.placed.order_type, parent.placed.action) == ("MKT", "BUY")
            assert (stop.placed.order_type, target.placed.order_type) == ("STP", "LMT")
            assert [x.placed.transmit for x in (parent, stop, target)] == [False, False, True]
            assert stop.placed.parent_id == target.placed.parent_id == parent.placed.order_id
            assert stop.placed.oca_group == target.placed.oca_group == "oca-wire-entry"
            assert [x.placed.order_ref for x in (parent, stop, target)] == [
                "wire-entry",
                "wire-stop",
                "wire-target",
            ]
            # children sent at distances from the last close, moved to the fill's after it
            assert stop.placed.aux_price == 5000.0 - o.stop_distance
            assert target.placed.limit_price == 5000.0 + o.target_distance
            assert parent.contract.local_symbol == d.ib_venue.contracts["ES"].localSymbol
            await d.bar(5000.0, 5000.25, 4999.75, 5000.0)
            await rec.wait(lambda: bool(rec.of("wire-target", OrderAccepted)), 5, "children")
            await d.barrier()
            assert stop.placed.aux_price == 5000.25 - o.stop_distance
            assert target.placed.limit_price == 5000.25 + o.target_distance
            wo = {w.role: w for w in d.venue.working_orders()}
            assert wo["stop"].venue_order_id == str(stop.placed.order_id)
            assert wo["stop"].contract == parent.contract.local_symbol
        finally:
            await d.close()

    asyncio.run(scenario())


def test_the_gateway_rejects_and_answers_slowly_on_request() -> None:
    async def scenario() -> None:
        d, rec = await _started()
        try:
            d.sim.reject_next("insufficient margin")
            d.venue.submit_bracket(_bracket(d, "margin-entry", qty=1))
            await rec.wait(lambda: bool(rec.of("margin-entry", OrderRejected)), 5, "reject")
            (rej,) = rec.of("margin-entry", OrderRejected)
            assert isinstance(rej, OrderRejected) and "insufficient margin" in rej.reason
            assert d.venue.working_orders() == []
            d.sim.delay_ms = 300
            t0 = time.monotonic()
            d.venue.submit_bracket(_bracket(d, "slow-entry", qty=1))
            await rec.wait(lambda: bool(rec.of("slow-entry", OrderAccepted)), 5, "slow accept")
            assert time.monotonic() - t0 >= 0.3
        finally:
            await d.close()

    asyncio.run(scenario())


def test_a_second_session_with_the_same_client_id_is_refused() -> None:
    async def scenario() -> None:
        d, _ = await _started()
        other = IbVenue(
            INSTRUMENTS, IbVenueSettings(port=d.sim.port, client_id=11, connect_timeout_s=1.0)
        )
        try:
            with pytest.raises((ConnectionError, TimeoutError, OSError)):
                await other.connect()
            assert other.state is ConnectionState.DISCONNECTED
            assert d.venue.connected
        finally:
            await other.disconnect()
            await d.close()

    asyncio.run(scenario())


def test_a_gateway_restart_with_a_fill_while_down_reconnects_and_reconciles_clean() -> None:
    async def scenario() -> None:
        d, rec = await _started()
        try:
            o = _bracket(d, "night-entry", qty=2)
            _stop, target = await _filled_bracket(d, rec, o)
            states: list[ConnectionState] = []
            await d.barrier()
            await d.sim.stop()  # the nightly restart begins
            await rec.wait(lambda: not d.venue.connected, 5, "the drop")
            states.append(d.venue.state)
            await d.bar(target, target + 4 * d.tick, target - d.tick, target + d.tick)
            assert not rec.of(o.child_id("target"), OrderFilled)  # nobody to tell yet
            await d.sim.start()
            await rec.wait(lambda: d.venue.connected, 5, "the reconnect")
            await rec.wait(lambda: bool(rec.of(o.child_id("stop"), OrderCancelled)), 5, "oco")
            assert states == [ConnectionState.CONNECTING]
            assert d.ib_venue.reconnects == 1 and d.sim.connections == 2
            (tfill,) = rec.of(o.child_id("target"), OrderFilled)
            assert isinstance(tfill, OrderFilled) and tfill.commission_usd == 4.0
            (cancel,) = rec.of(o.child_id("stop"), OrderCancelled)
            assert isinstance(cancel, OrderCancelled) and cancel.reason == "oco"
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
            assert ledger.realized_pnl_usd["ES"] == pytest.approx(
                (tfill.fill_price - 5000.25) * 2 * 50.0 - 8.0
            )
        finally:
            await d.close()

    asyncio.run(scenario())


def test_a_restarted_trader_finds_its_position_and_children_at_the_gateway() -> None:
    async def scenario() -> None:
        d, rec = await _started()
        try:
            o = _bracket(d, "crash-entry", qty=1, side="sell")
            stop, _target = await _filled_bracket(d, rec, o)
            await d.barrier()
            await d.venue.disconnect()  # the old process is gone, its orders stay
            fresh = await start_ib(client_id=11, sim=d.sim)
            try:
                (pos,) = fresh.venue.positions()
                assert (pos.symbol, pos.quantity, pos.avg_price) == ("ES", -1, 4999.75)
                assert pos.contract == d.sim.contract("ES").local_symbol
                trades = fresh.ib_venue.ib.openTrades()
                assert sorted(t.order.orderRef for t in trades) == ["crash-stop", "crash-target"]
                assert {t.order.auxPrice for t in trades if t.order.orderType == "STP"} == {stop}
            finally:
                await fresh.venue.disconnect()
        finally:
            await d.close()

    asyncio.run(scenario())


def test_a_restarted_process_restores_its_brackets_and_learns_what_filled_while_it_was_dead() -> (
    None
):
    async def scenario() -> None:
        d, rec = await _started()
        try:
            held = _bracket(d, "keep-entry", qty=1)
            gone = _bracket(d, "gone-entry", qty=1, side="sell")
            d.venue.submit_bracket(held)
            d.venue.submit_bracket(gone)
            p = d.start_price
            await d.bar(p, p + d.tick, p - d.tick, p)
            await rec.wait(
                lambda: bool(rec.of(gone.child_id("target"), OrderAccepted)), 5, "the children"
            )
            await d.barrier()
            await d.venue.disconnect()  # the process dies: nobody listens, orders stay
            (gone_stop,) = [
                e for e in rec.of(gone.child_id("stop")) if isinstance(e, OrderSubmitted)
            ]
            assert gone_stop.stop_price is not None
            up = gone_stop.stop_price  # the short's stop fills; the long's target is far above
            d.sim.on_bar(
                MarketBar("ES", d.ts_s + 60, up, up + d.tick, up - d.tick, up, 10.0), RegularHours()
            )
            fresh = await start_ib(client_id=11, sim=d.sim)
            after = Recorder()
            fresh.venue.add_listener(after)
            try:
                restored = fresh.ib_venue.restore(rec.events)
                assert restored == ["keep-entry"]
                (sfill,) = after.of(gone.child_id("stop"), OrderFilled)
                assert isinstance(sfill, OrderFilled) and sfill.commission_usd == 2.0
                (oco,) = after.of(gone.child_id("target"), OrderCancelled)
                assert isinstance(oco, OrderCancelled) and oco.reason == "oco"
                assert {w.client_order_id for w in fresh.venue.working_orders()} == {
                    "keep-stop",
                    "keep-target",
                }
                fresh.venue.modify("keep-stop", stop_price=p - 40 * d.tick)
                fresh.venue.flatten("ES", reason="operator")
                await after.wait(lambda: bool(after.of("keep-flatten", OrderFilled)), 5, "flatten")
                assert fresh.venue.positions() == []
                await after.wait(
                    lambda: bool(after.of("keep-target", OrderCancelled)), 5, "the cancels"
                )
                (flat,) = after.of("keep-flatten", OrderFilled)
                assert isinstance(flat, OrderFilled) and flat.side == "sell"
                assert fresh.venue.working_orders() == []
            finally:
                await fresh.venue.disconnect()
        finally:
            await d.close()

    asyncio.run(scenario())


def test_lost_connectivity_to_ibs_servers_holds_orders_and_catches_up_on_1102() -> None:
    async def scenario() -> None:
        d, rec = await _started()
        try:
            o = _bracket(d, "link-entry", qty=1)
            _stop, target = await _filled_bracket(d, rec, o)
            d.sim.lose_connectivity()  # error 1100: the socket stays, the servers are gone
            await rec.wait(lambda: not d.venue.connected, 5, "the 1100")
            assert d.venue.state is ConnectionState.CONNECTING and d.ib_venue.ib.isConnected()
            with pytest.raises(VenueDisconnected):
                d.venue.submit_bracket(_bracket(d, "late-entry", qty=1))
            await d.bar(target, target + 2 * d.tick, target - d.tick, target)
            await d.barrier()
            assert not rec.of(o.child_id("target"), OrderFilled)  # its news did not arrive
            d.sim.restore_connectivity()  # error 1102: data maintained
            await rec.wait(lambda: d.venue.connected, 5, "the catch-up")
            assert d.ib_venue.reconnects == 1 and d.sim.connections == 1  # same socket
            (tfill,) = rec.of(o.child_id("target"), OrderFilled)
            assert isinstance(tfill, OrderFilled) and tfill.commission_usd == 2.0
            (oco,) = rec.of(o.child_id("stop"), OrderCancelled)
            assert isinstance(oco, OrderCancelled) and oco.reason == "oco"
            assert d.venue.positions() == [] and d.venue.working_orders() == []
        finally:
            await d.close()

    asyncio.run(scenario())


def test_a_fill_whose_commission_report_never_comes_is_published_after_the_wait() -> None:
    async def scenario() -> None:
        d, rec = await _started()
        d.ib_venue.commission_wait_s = 0.2
        d.sim.withhold_commissions = True
        try:
            o = _bracket(d, "nocomm-entry", qty=1)
            d.venue.submit_bracket(o)
            p = d.start_price
            await d.bar(p, p + d.tick, p - d.tick, p)
            await d.barrier()
            assert not rec.of(o.client_order_id, OrderFilled)  # still waiting for the report
            await rec.wait(lambda: bool(rec.of(o.client_order_id, OrderFilled)), 5, "the fill")
            (fill,) = rec.of(o.client_order_id, OrderFilled)
            assert isinstance(fill, OrderFilled) and fill.commission_usd == 0.0
            await rec.wait(lambda: bool(rec.of(o.child_id("stop"), OrderAccepted)), 5, "children")
        finally:
            await d.close()

    asyncio.run(scenario())
