"""The simulator's bytes pinned to ib_async's own `Decoder` at the simulator's server version.

ib_async ships no recorded gateway messages (its tests need a live TWS), so each
message the simulator writes is framed, split and decoded by the library's decoder
here, and the decoded objects are checked field by field.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from ib_async.client import Client
from ib_async.decoder import Decoder

from trader.venues.sims import ib_wire as w

CONTRACT = w.IbContract(
    con_id=495512563,
    symbol="ES",
    month="202612",
    last_trade_date="20261218",
    local_symbol="ESZ6",
    multiplier="50",
    min_tick=0.25,
)
STOP = w.PlacedOrder(
    order_id=12,
    con_id=CONTRACT.con_id,
    symbol="ES",
    sec_type="FUT",
    month="202612",
    exchange="CME",
    action="SELL",
    quantity=2.0,
    order_type="STP",
    limit_price=None,
    aux_price=4996.0,
    tif="GTC",
    oca_group="oca-a1-entry",
    account="DU0000001",
    order_ref="a1-stop",
    transmit=False,
    parent_id=11,
)


class Calls:
    """The wrapper side: records each callback the decoder makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.ib = SimpleNamespace(TimezoneTWS=None)
        self.defaultTimezone = UTC

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any) -> None:
            self.calls.append((name, args))

        return record


def decode(fields: list[w.Field], caplog: pytest.LogCaptureFixture) -> tuple[str, tuple[Any, ...]]:
    """Frame a message, split it as the client does, decode it with ib_async; return the call."""
    buf = bytearray(w.frame(fields))
    (message,) = w.split_frames(buf)
    assert not buf
    calls = Calls()
    with caplog.at_level(logging.ERROR, logger="ib_async"):
        Decoder(calls, w.SERVER_VERSION).interpret(message)  # type: ignore[arg-type]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    (call,) = calls.calls
    return call


def test_the_server_version_is_inside_ib_asyncs_range() -> None:
    assert Client.MinClientVersion <= w.SERVER_VERSION <= Client.MaxClientVersion
    fields = w.split_frames(bytearray(w.handshake_answer(datetime(2026, 12, 3, tzinfo=UTC))))[0]
    assert fields == [str(w.SERVER_VERSION), "20261203 00:00:00 UTC"]  # two fields: the handshake


def test_open_order_decodes_to_the_bracket_child(caplog: pytest.LogCaptureFixture) -> None:
    name, (order_id, contract, order, state) = decode(
        w.encode_open_order(STOP, CONTRACT, perm_id=1000007, client_id=3, status="PreSubmitted"),
        caplog,
    )
    assert (name, order_id) == ("openOrder", 12)
    assert (contract.conId, contract.localSymbol, contract.secType) == (495512563, "ESZ6", "FUT")
    assert contract.lastTradeDateOrContractMonth == "20261218" and contract.multiplier == "50"
    assert (order.action, order.totalQuantity, order.orderType) == ("SELL", 2.0, "STP")
    assert (order.auxPrice, order.parentId, order.ocaGroup) == (4996.0, 11, "oca-a1-entry")
    assert (order.orderRef, order.clientId, order.permId) == ("a1-stop", 3, 1000007)
    assert (order.tif, order.account, order.ocaType) == ("GTC", "DU0000001", 3)
    assert state.status == "PreSubmitted"
    assert order.autoCancelParent is False and order.adjustedOrderType == "None"


def test_order_status_exec_details_and_commission_decode(caplog: pytest.LogCaptureFixture) -> None:
    name, args = decode(
        w.encode_order_status(12, "Filled", 2, 0, 4996.0, 1000007, 11, 4996.0, 3), caplog
    )
    assert name == "orderStatus"
    assert args == (12, "Filled", 2.0, 0.0, 4996.0, 1000007, 11, 4996.0, 3, "", 0.0)
    ts = datetime(2026, 12, 3, 14, 31, 0, tzinfo=UTC)
    name, (req_id, contract, ex) = decode(
        w.encode_exec_details(
            -1,
            12,
            CONTRACT,
            exec_id="0000e0d5.000f4247.01.01",
            ts=ts,
            account="DU0000001",
            side="SLD",
            shares=2,
            price=4996.0,
            perm_id=1000007,
            client_id=3,
            cum_qty=2,
            avg_price=4996.0,
            order_ref="a1-stop",
        ),
        caplog,
    )
    assert (name, req_id, contract.localSymbol) == ("execDetails", -1, "ESZ6")
    assert (ex.orderId, ex.execId, ex.side, ex.shares, ex.price) == (
        12,
        "0000e0d5.000f4247.01.01",
        "SLD",
        2.0,
        4996.0,
    )
    assert (ex.permId, ex.clientId, ex.cumQty, ex.avgPrice, ex.orderRef) == (
        1000007,
        3,
        2.0,
        4996.0,
        "a1-stop",
    )
    assert ex.time == ts and ex.exchange == "CME" and ex.acctNumber == "DU0000001"
    name, (report,) = decode(
        w.encode_commission_report("0000e0d5.000f4247.01.01", 4.5, 0.0), caplog
    )
    assert name == "commissionReport"
    assert (report.execId, report.commission, report.currency) == (
        "0000e0d5.000f4247.01.01",
        4.5,
        "USD",
    )


def test_position_contract_details_and_error_decode(caplog: pytest.LogCaptureFixture) -> None:
    name, (account, contract, qty, cost) = decode(
        w.encode_position("DU0000001", CONTRACT, -1, 4999.75 * 50), caplog
    )
    assert (name, account, contract.localSymbol, qty, cost) == (
        "position",
        "DU0000001",
        "ESZ6",
        -1.0,
        249987.5,
    )
    name, (req_id, cd) = decode(w.encode_contract_details(7, CONTRACT), caplog)
    assert (name, req_id, cd.contract.conId, cd.contract.localSymbol) == (
        "contractDetails",
        7,
        495512563,
        "ESZ6",
    )
    assert cd.contract.lastTradeDateOrContractMonth == "20261218" and cd.minTick == 0.25
    assert (cd.contract.multiplier, cd.contractMonth, cd.contract.exchange) == (
        "50",
        "202612",
        "CME",
    )
    name, args = decode(w.encode_error(12, 201, "Order rejected - reason:margin"), caplog)
    assert (name, args) == ("error", (12, 201, "Order rejected - reason:margin", ""))


def test_place_order_parse_refuses_what_is_not_one() -> None:
    with pytest.raises(w.ProtocolError, match="not a placeOrder"):
        w.PlacedOrder.parse(["4", "1", "12"])
    fields = ["3", "x", *["" for _ in range(40)]]
    with pytest.raises(w.ProtocolError, match="malformed placeOrder"):
        w.PlacedOrder.parse(fields)
    with pytest.raises(w.ProtocolError, match="exceeds"):
        w.split_frames(bytearray(b"\xff\xff\xff\xff"))
