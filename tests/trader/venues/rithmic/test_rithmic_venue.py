"""What is particular to `rithmic`: the bracket on the wire, how notifications map to order events, TLS, login."""

from __future__ import annotations

import asyncio
import logging

import pytest
from pydantic import SecretStr

from infra.contracts import (
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
)
from tests.trader.venues.conformance import Recorder
from tests.trader.venues.rithmic.driver import (
    INSTRUMENTS,
    RegularHours,
    settings_for,
    start_rithmic,
)
from trader.core.bar import MarketBar
from trader.venues.base import BracketOrder
from trader.venues.rithmic import RithmicVenue
from trader.venues.sims.rithmic import RithmicSimulator
from trader.venues.sims.rithmic_book import LIMIT, MARKET, STOP_MARKET, TARGET_AND_STOP_STATIC


def _bracket(cid: str, qty: int = 1, side: str = "buy", **more: object) -> BracketOrder:
    return BracketOrder(cid, "ES", side, qty, stop_distance=4.0, target_distance=8.0, **more)  # type: ignore[arg-type]


def test_a_bracket_is_one_request_and_the_gateway_places_stop_and_target_after_the_fill() -> None:
    async def go() -> None:
        d = await start_rithmic()
        try:
            rec = Recorder()
            d.venue.add_listener(rec)
            d.venue.submit_bracket(_bracket("wire-entry", qty=2))
            await d.rt.drain()
            (entry,) = d.sim.orders.values()
            assert (entry.user_tag, entry.price_type, entry.bracket_type) == (
                "wire-entry",
                MARKET,
                TARGET_AND_STOP_STATIC,
            )
            p = d.start_price
            await d.bar(p, p + 1, p - 1, p)
            await rec.wait(lambda: len(d.venue.working_orders()) == 2, 5, "children")
            fill = rec.of("wire-entry", OrderFilled)[0]
            assert isinstance(fill, OrderFilled) and fill.venue_order_id == entry.basket_id
            stop, target = (o for o in d.sim.orders.values() if o is not entry)
            # 4.0 points = 16 ticks below, 8.0 points = 32 ticks above the fill, placed by the gateway
            assert (stop.price_type, stop.trigger_price) == (STOP_MARKET, fill.fill_price - 4.0)
            assert (target.price_type, target.price) == (LIMIT, fill.fill_price + 8.0)
            assert stop.original_basket_id == target.original_basket_id == entry.basket_id
            assert stop.linked_basket_ids == target.basket_id
            assert {(w.role, w.venue_order_id) for w in d.venue.working_orders()} == {
                ("stop", stop.basket_id),
                ("target", target.basket_id),
            }
            (s,) = rec.of("wire-stop", OrderSubmitted)
            assert isinstance(s, OrderSubmitted) and s.parent_id == "wire-entry" and s.quantity == 2
            assert [(x.symbol, x.quantity, x.contract) for x in d.venue.positions()] == [
                ("ES", 2, d.sim.contracts["ES"])
            ]
        finally:
            await d.close()

    asyncio.run(go())


def test_reject_partial_fill_modify_cancel_and_flatten_become_our_order_events() -> None:
    async def go() -> None:
        d = await start_rithmic(max_fill_per_bar=1)
        try:
            rec = Recorder()
            d.venue.add_listener(rec)
            # a rejection by the gateway's risk check, with its text
            d.sim.reject_next("insufficient margin")
            d.venue.submit_bracket(_bracket("rej-entry"))
            await rec.wait(lambda: bool(rec.of("rej-entry", OrderRejected)), 5, "the rejection")
            (rej,) = rec.of("rej-entry", OrderRejected)
            assert isinstance(rej, OrderRejected) and rej.reason == "insufficient margin"
            assert [type(e) for e in rec.of("rej-entry")] == [OrderSubmitted, OrderRejected]
            # a limit entry: its price moves, then it fills in two parts
            p = d.start_price
            d.venue.submit_bracket(
                _bracket("lim-entry", qty=2, entry_type="limit", limit_price=p - 2)
            )
            await rec.wait(lambda: bool(rec.of("lim-entry", OrderAccepted)), 5, "accept")
            d.venue.modify("lim-entry", limit_price=p - 1)
            await rec.wait(lambda: len(rec.of("lim-entry", OrderAccepted)) == 2, 5, "the modify")
            ack = rec.of("lim-entry", OrderAccepted)[-1]
            assert isinstance(ack, OrderAccepted) and ack.limit_price == p - 1
            await d.bar(p, p + 0.25, p - 1.5, p - 1)
            await d.bar(p - 1, p - 0.5, p - 1.25, p - 0.75)
            await rec.wait(lambda: len(rec.of("lim-entry", OrderFilled)) == 2, 5, "two fills")
            fills = rec.of("lim-entry", OrderFilled)
            assert [(f.quantity, f.cumulative_quantity, f.leaves_quantity) for f in fills] == [  # type: ignore[attr-defined]
                (1, 1, 1),
                (1, 2, 0),
            ]
            assert len({f.venue_fill_id for f in fills}) == 2  # type: ignore[attr-defined]
            await rec.wait(lambda: len(d.venue.working_orders()) == 2, 5, "the children")
            # the target is cancelled on request; the stop stays; flatten closes at market
            d.venue.cancel("lim-target")
            await rec.wait(lambda: bool(rec.of("lim-target", OrderCancelled)), 5, "cancel")
            (cancelled,) = rec.of("lim-target", OrderCancelled)
            assert isinstance(cancelled, OrderCancelled) and cancelled.reason == "requested"
            assert [w.role for w in d.venue.working_orders()] == ["stop"]
            d.venue.flatten("ES", reason="operator")
            await rec.wait(lambda: bool(rec.of("lim-flatten", OrderFilled)), 5, "the flatten")
            await rec.wait(lambda: bool(rec.of("lim-stop", OrderCancelled)), 5, "the stop's cancel")
            (flat_sub,) = rec.of("lim-flatten", OrderSubmitted)
            assert isinstance(flat_sub, OrderSubmitted) and flat_sub.reason == "operator"
            (flat,) = rec.of("lim-flatten", OrderFilled)
            assert isinstance(flat, OrderFilled) and (flat.side, flat.quantity) == ("sell", 2)
            closing = next(o for o in d.sim.orders.values() if o.user_tag == "lim-flatten")
            assert closing.price_type == MARKET and flat.venue_order_id == closing.basket_id
            assert d.venue.positions() == [] and d.venue.working_orders() == []
            assert d.sim.net["ES"][0] == 0
        finally:
            await d.close()

    asyncio.run(go())


def test_tls_is_verified_and_a_refused_login_names_the_settings_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        sim = RithmicSimulator(INSTRUMENTS)
        await sim.start()
        try:
            # without the simulator's CA the certificate does not verify
            with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await RithmicVenue(INSTRUMENTS, settings_for(sim, ca_file="")).connect()
            wrong = "not-the-password-Zq81"
            venue = RithmicVenue(INSTRUMENTS, settings_for(sim, password=SecretStr(wrong)))
            with pytest.raises(ConnectionError, match="RITHMIC_PASSWORD") as refused:
                await venue.connect()
            assert wrong not in str(refused.value) and not venue.connected
            assert sim.sessions("order") == 0
            with pytest.raises(ConnectionError, match="no account 'NOPE'"):
                await RithmicVenue(INSTRUMENTS, settings_for(sim, account="NOPE")).connect()
            ok = RithmicVenue(INSTRUMENTS, settings_for(sim))
            await ok.connect()
            await ok.disconnect()
        finally:
            await sim.stop()
            sim.close()

    rithmic = logging.getLogger("rithmic")
    level = rithmic.level
    rithmic.setLevel(logging.DEBUG)  # async_rithmic logs every request it sends at DEBUG
    caplog.set_level(logging.DEBUG)
    try:
        asyncio.run(go())
    finally:
        rithmic.setLevel(level)
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "RequestLogin" in logged or "template_id" in logged  # the requests were logged
    assert "not-the-password-Zq81" not in logged and "sim-password" not in logged


def test_slow_answers_keep_the_order_of_requests_and_a_cut_network_is_reconnected() -> None:
    async def go() -> None:
        d = await start_rithmic()
        try:
            rec = Recorder()
            d.venue.add_listener(rec)
            d.sim.delay_ms = 150  # every request waits before the gateway handles it
            d.venue.submit_bracket(_bracket("slow1-entry"))
            d.venue.submit_bracket(_bracket("slow2-entry", side="sell"))
            assert not rec.of("slow1-entry", OrderAccepted)  # the methods did not wait
            await rec.wait(lambda: bool(rec.of("slow2-entry", OrderAccepted)), 5, "both accepted")
            accepted = [e.client_order_id for e in rec.events if isinstance(e, OrderAccepted)]
            assert accepted == ["slow1-entry", "slow2-entry"]
            d.sim.delay_ms = 0
            await d.sim.drop_clients()  # connections reset; the gateway stays up
            await rec.wait(lambda: not d.venue.connected, 5, "the drop noticed")
            await rec.wait(lambda: d.venue.connected, 10, "the session back")
            assert d.rt.reconnects == 1
            assert d.sim.sessions("order") == 1 and d.sim.sessions("pnl") == 1
            assert {w.client_order_id for w in d.venue.working_orders()} == {
                "slow1-entry",
                "slow2-entry",
            }
            assert len(rec.of("slow1-entry", OrderAccepted)) == 1  # the catch-up adds nothing
            d.venue.cancel("slow2-entry")
            await rec.wait(lambda: bool(rec.of("slow2-entry", OrderCancelled)), 5, "the cancel")
        finally:
            await d.close()

    asyncio.run(go())


def test_a_flatten_racing_an_entrys_fill_still_ends_flat() -> None:
    async def go() -> None:
        d = await start_rithmic()
        try:
            rec = Recorder()
            d.venue.add_listener(rec)
            d.venue.submit_bracket(_bracket("race-entry", qty=2))
            await rec.wait(lambda: bool(rec.of("race-entry", OrderAccepted)), 5, "accept")
            d.sim.delay_ms = 100  # the cancel reaches the gateway after the fill
            d.venue.flatten("ES", reason="kill")
            p = d.start_price
            d.sim.on_bar(MarketBar("ES", d.ts_s + 60, p, p + 1, p - 1, p, 10.0), RegularHours())
            await rec.wait(lambda: bool(rec.of("race-entry", OrderFilled)), 5, "the entry's fill")
            await rec.wait(
                lambda: d.venue.positions() == [] and d.venue.working_orders() == [], 10, "flat"
            )
            (closing,) = [
                e for e in rec.events if isinstance(e, OrderFilled) and e.role == "flatten"
            ]
            assert isinstance(closing, OrderFilled) and (closing.side, closing.quantity) == (
                "sell",
                2,
            )
            assert d.sim.net["ES"][0] == 0
            assert not any(o.status == "open" for o in d.sim.orders.values())
        finally:
            await d.close()

    asyncio.run(go())


def test_a_request_the_gateway_refuses_is_rejected_and_its_reason_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        sim = RithmicSimulator({"ES": INSTRUMENTS["ES"]})  # this gateway lists no NQ
        await sim.start()
        d = await start_rithmic(sim=sim)
        try:
            rec = Recorder()
            d.venue.add_listener(rec)
            d.venue.submit_bracket(BracketOrder("nq-entry", "NQ", "buy", 1, 4.0, 8.0))
            await rec.wait(lambda: bool(rec.of("nq-entry", OrderRejected)), 5, "the refusal")
            (rej,) = rec.of("nq-entry", OrderRejected)
            assert isinstance(rej, OrderRejected) and "refused" in rej.reason
            assert d.venue.working_orders() == [] and d.venue.connected
        finally:
            await d.close()

    caplog.set_level(logging.WARNING)
    asyncio.run(go())
    assert any("unknown symbol 'NQ" in r.getMessage() for r in caplog.records)
