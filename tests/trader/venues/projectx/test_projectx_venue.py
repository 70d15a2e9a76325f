"""What is particular to `projectx`: the bracket on the wire, fault switches, NQ's gate, a gateway restart."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
import requests
import websocket

from infra.contracts import (
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
)
from tests.trader.venues.conformance import Recorder
from tests.trader.venues.projectx.driver import INSTRUMENTS, RegularHours, start_projectx
from trader.core.bar import MarketBar
from trader.venues.base import BracketOrder, ConnectionState, DuplicateClientOrderId
from trader.venues.ledger import Ledger
from trader.venues.reconcile import known_order_ids, reconcile
from trader.venues.sims.projectx import RS, ProjectxSimulator


def _bracket(cid: str, symbol: str = "ES", qty: int = 1) -> BracketOrder:
    return BracketOrder(cid, symbol, "buy", qty, stop_distance=4.0, target_distance=8.0)


def test_a_bracket_is_one_place_with_the_gateways_tick_brackets() -> None:
    async def go() -> None:
        d = await start_projectx()
        try:
            rec = Recorder()
            d.venue.add_listener(rec)
            d.venue.submit_bracket(_bracket("wire-entry", qty=2))
            await d.px.drain()
            (order,) = d.sim.orders.values()
            assert order["customTag"] == "wire-entry" and order["type"] == 2 and order["side"] == 0
            p = d.start_price
            await d.bar(p, p + 1, p - 1, p)
            await rec.wait(lambda: len(d.venue.working_orders()) == 2, 5, "children")
            stop, target = sorted(d.sim.orders.values(), key=lambda o: o["id"])[1:]
            fill = rec.of("wire-entry", OrderFilled)[0]
            assert isinstance(fill, OrderFilled)
            # 4.0 points = 16 ticks below, 8.0 points = 32 ticks above the fill, placed by the Gateway
            assert (stop["type"], stop["stopPrice"]) == (4, fill.fill_price - 4.0)
            assert (target["type"], target["limitPrice"]) == (1, fill.fill_price + 8.0)
            assert stop["customTag"] is None and stop["side"] == target["side"] == 1
            assert {w.venue_order_id for w in d.venue.working_orders()} == {
                str(stop["id"]),
                str(target["id"]),
            }
        finally:
            await d.close()

    asyncio.run(go())


def test_rejection_switch_nq_gate_and_slow_answers() -> None:
    async def go() -> None:
        d = await start_projectx()
        try:
            rec = Recorder()
            d.venue.add_listener(rec)
            d.sim.reject_next("insufficient margin")
            d.venue.submit_bracket(_bracket("rej-entry"))
            d.venue.submit_bracket(_bracket("nq-entry", symbol="NQ"))
            await rec.wait(lambda: bool(rec.of("rej-entry", OrderRejected)), 5, "the rejection")
            (rej,) = rec.of("rej-entry", OrderRejected)
            assert isinstance(rej, OrderRejected) and "insufficient margin" in rej.reason
            (nq,) = rec.of("nq-entry", OrderRejected)
            assert isinstance(nq, OrderRejected) and "TOPSTEPX_ENABLE_NQ" in nq.reason
            assert not any(o["customTag"] == "nq-entry" for o in d.sim.orders.values())
            d.sim.delay_ms = 300
            started = time.monotonic()
            d.venue.submit_bracket(_bracket("slow-entry"))  # never blocks on the Gateway
            assert time.monotonic() - started < 0.1
            await rec.wait(lambda: bool(rec.of("slow-entry", OrderAccepted)), 5, "a slow accept")
            assert time.monotonic() - started >= 0.3
        finally:
            await d.close()

    asyncio.run(go())


def test_nq_trades_when_enabled() -> None:
    async def go() -> None:
        d = await start_projectx(enable_nq=True)
        try:
            rec = Recorder()
            d.venue.add_listener(rec)
            d.venue.submit_bracket(_bracket("nq2-entry", symbol="NQ"))
            await rec.wait(lambda: bool(rec.of("nq2-entry", OrderAccepted)), 5, "NQ accepted")
            (order,) = d.sim.orders.values()
            assert order["contractId"].startswith("CON.F.US.ENQ.")
        finally:
            await d.close()

    asyncio.run(go())


def test_gateway_restart_with_a_fill_while_down_reconnects_and_catches_up() -> None:
    async def go() -> None:
        d = await start_projectx()
        try:
            rec = Recorder()
            d.venue.add_listener(rec)
            d.venue.submit_bracket(_bracket("gw-entry", qty=2))
            await rec.wait(lambda: bool(rec.of("gw-entry", OrderAccepted)), 5, "accept")
            logins = d.sim.logins
            await d.sim.stop()
            await rec.wait(lambda: d.venue.state is ConnectionState.CONNECTING, 5, "reconnecting")
            p = d.start_price
            quiet = MarketBar("ES", d.ts_s + 60, p, p + 0.25, p - 0.25, p, 10.0)
            d.sim.on_bar(quiet, RegularHours())  # the Gateway fills while the trader is away
            await d.sim.start()
            await rec.wait(lambda: d.venue.connected, 10, "the session back")
            assert d.sim.logins == logins + 1 and d.px.reconnects == 1
            (fill,) = rec.of("gw-entry", OrderFilled)
            assert isinstance(fill, OrderFilled) and fill.quantity == 2
            assert [(x.symbol, x.quantity) for x in d.venue.positions()] == [("ES", 2)]
            assert {w.role for w in d.venue.working_orders()} == {"stop", "target"}
            # the hub works again: the target fills live
            target = next(w for w in d.venue.working_orders() if w.role == "target")
            assert target.limit_price is not None
            t = target.limit_price
            await d.bar(t, t + 1, t - 0.25, t + 0.5)
            await rec.wait(lambda: d.venue.positions() == [], 5, "the target's fill")
            await rec.wait(lambda: bool(rec.of("gw-stop", OrderCancelled)), 5, "the OCO cancel")
            assert d.venue.working_orders() == []
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
            await d.close()

    asyncio.run(go())


def test_the_hub_speaks_signalr_json_with_record_separators() -> None:
    """A raw websocket client: handshake, a subscription's completion, a ping, an order push."""

    async def go() -> None:
        d = await start_projectx()
        try:
            sim = d.sim
            login = await asyncio.to_thread(
                requests.post,
                f"{sim.url}/api/Auth/loginKey",
                json={"userName": sim.username, "apiKey": sim.api_key},
                timeout=3,
            )
            body = login.json()
            assert set(body) >= {"token", "success", "errorCode", "errorMessage"}
            assert body["success"] is True and body["errorCode"] == 0
            url = f"ws://127.0.0.1:{sim.port}/hubs/user?access_token={body['token']}"
            ws = await asyncio.to_thread(websocket.create_connection, url, timeout=3)
            try:
                ws.send(json.dumps({"protocol": "json", "version": 1}) + RS)
                assert await asyncio.to_thread(ws.recv) == "{}" + RS
                sub = {
                    "type": 1,
                    "target": "SubscribeOrders",
                    "arguments": [7001],
                    "invocationId": "1",
                }
                ws.send(json.dumps(sub) + RS + json.dumps({"type": 6}) + RS)
                done = json.loads((await asyncio.to_thread(ws.recv)).rstrip(RS))
                assert done == {"type": 3, "invocationId": "1", "result": None}
                assert json.loads((await asyncio.to_thread(ws.recv)).rstrip(RS)) == {"type": 6}
                d.venue.submit_bracket(_bracket("raw-entry"))
                push = json.loads((await asyncio.to_thread(ws.recv)).rstrip(RS))
                assert push["type"] == 1 and push["target"] == "GatewayUserOrder"
                (arg,) = push["arguments"]
                assert set(arg["data"]) >= {
                    "id",
                    "accountId",
                    "contractId",
                    "creationTimestamp",
                    "updateTimestamp",
                    "status",
                    "type",
                    "side",
                    "size",
                    "limitPrice",
                    "stopPrice",
                    "fillVolume",
                    "filledPrice",
                    "customTag",
                }
            finally:
                ws.close()
            bad = await asyncio.to_thread(
                requests.post,
                f"{sim.url}/api/Order/searchOpen",
                json={"accountId": 7001},
                timeout=3,
            )
            assert bad.status_code == 401
        finally:
            await d.close()

    asyncio.run(go())


def test_an_unknown_account_is_refused_at_connect() -> None:
    async def go() -> None:
        sim = ProjectxSimulator(INSTRUMENTS)
        await sim.start()
        try:
            with pytest.raises(ConnectionError, match="no active account 'nobody'"):
                await start_projectx(sim=sim, account="nobody")
        finally:
            await sim.stop()

    asyncio.run(go())


def test_a_restarted_process_restores_its_brackets_and_learns_what_filled_while_it_was_dead() -> (
    None
):
    async def go() -> None:
        d = await start_projectx()
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
            await d.px.drain()
            d.px._closing = True  # the process dies (kill -9): nobody listens any more
            d.px._stop_hub()
            (gone_stop,) = [e for e in rec.of("gone-stop") if isinstance(e, OrderSubmitted)]
            assert isinstance(gone_stop, OrderSubmitted) and gone_stop.stop_price is not None
            up = gone_stop.stop_price  # the short's stop fills; the long's target is far above
            d.sim.on_bar(
                MarketBar("ES", d.ts_s + 60, up, up + 0.25, up - 0.25, up, 10.0), RegularHours()
            )
            fresh = await start_projectx(sim=d.sim)
            after = Recorder()
            fresh.venue.add_listener(after)
            try:
                assert fresh.px.restore(rec.events) == ["keep-entry"]
                (sfill,) = after.of("gone-stop", OrderFilled)
                assert isinstance(sfill, OrderFilled) and sfill.commission_usd == pytest.approx(2.1)
                (oco,) = after.of("gone-target", OrderCancelled)
                assert isinstance(oco, OrderCancelled) and oco.reason == "oco"
                assert {w.client_order_id for w in fresh.venue.working_orders()} == {
                    "keep-stop",
                    "keep-target",
                }
                assert [(x.symbol, x.quantity) for x in fresh.venue.positions()] == [("ES", 1)]
                with pytest.raises(DuplicateClientOrderId):
                    fresh.venue.submit_bracket(held)
                fresh.venue.modify("keep-stop", stop_price=p - 10.0)
                await after.wait(lambda: bool(after.of("keep-stop", OrderAccepted)), 5, "modify")
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


def test_an_old_token_is_replaced_by_a_new_login_and_no_token_or_key_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        caplog.set_level(logging.DEBUG)
        d = await start_projectx(token_refresh_s=0.001)
        try:
            rec = Recorder()
            d.venue.add_listener(rec)
            assert d.sim.logins == 1
            d.venue.submit_bracket(_bracket("fresh-entry"))
            await rec.wait(lambda: bool(rec.of("fresh-entry", OrderAccepted)), 5, "accept")
            assert d.sim.logins == 2  # the request went out under a new token
            secrets = [*d.sim._tokens, d.sim.api_key]
            assert not [r for r in caplog.records if any(s in r.getMessage() for s in secrets)]
        finally:
            await d.close()

    asyncio.run(go())
