"""The Rithmic simulator's order book: paper venue events become R|Protocol notifications.

`RithmicBook` keeps the gateway's orders (baskets) and fills and turns each paper
venue event into what Rithmic sends: `RithmicOrderNotification` (351) and
`ExchangeOrderNotification` (352) to the order plant sessions subscribed to the
account, `InstrumentPnLPositionUpdate` (450) and `AccountPnLPositionUpdate` (451)
to the PnL plant's subscribers after each fill.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from infra.contracts import (
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    VenueEvent,
)
from trader.venues.paper import PaperVenue
from trader.venues.sims.rithmic_wire import (
    ORDER_PLANT,
    PNL_PLANT,
    RithmicGateway,
    message,
    now_ssboe,
)

__all__ = [
    "BUY",
    "LIMIT",
    "MARKET",
    "NOTIFY",
    "NOTIFY_EXCH",
    "SELL",
    "STOP_MARKET",
    "TARGET_AND_STOP_STATIC",
    "RithmicBook",
    "SimOrder",
]

BUY, SELL = 1, 2
LIMIT, MARKET, STOP_LIMIT, STOP_MARKET = 1, 2, 3, 4
#: RithmicOrderNotification.NotifyType
NOTIFY = {"received": 1, "open": 13, "modified": 14, "complete": 15, "modify_failed": 16}
#: ExchangeOrderNotification.NotifyType
NOTIFY_EXCH = {"status": 1, "modify": 2, "cancel": 3, "fill": 5, "reject": 6}
TARGET_AND_STOP_STATIC = 6


@dataclass
class SimOrder:
    """The gateway's record of one order (a basket)."""

    basket_id: str
    user_tag: str
    symbol: str
    side: int
    quantity: int
    price_type: int
    price: float = 0.0
    trigger_price: float = 0.0
    original_basket_id: str = ""
    linked_basket_ids: str = ""
    bracket_type: int = 0
    status: str = "open"
    completion_reason: str = ""
    filled: int = 0
    avg_fill_price: float = 0.0
    text: str = ""
    accepted: bool = False
    created: date = field(default_factory=lambda: datetime.now(UTC).date())


class RithmicBook:
    """The gateway's orders and fills, moved by the paper venue's events (a `RithmicSimulator` part)."""

    account_id: str
    exchange: str
    trade_route: str
    user: str
    gateway: RithmicGateway
    paper: PaperVenue
    contracts: dict[str, str]
    orders: dict[str, SimOrder]
    fills: list[Any]
    _by_cid: dict[str, str]
    _baskets: Any
    _fill_ids: Any
    _flatten_into: str
    _day_fills: dict[str, list[int]]
    #: symbol -> [net quantity, average price of the open quantity], first in first out
    net: dict[str, list[float]]

    def _ids(self) -> dict[str, str]:
        return {"fcm_id": self.gateway.fcm_id, "ib_id": self.gateway.ib_id}

    def _on_paper(self, event: VenueEvent) -> None:
        cid = getattr(event, "client_order_id", "")
        if isinstance(event, OrderSubmitted) and cid not in self._by_cid:
            self._child_or_flatten(event)
            return
        o = self.orders.get(self._by_cid.get(cid, ""))
        if o is None or o.status != "open":
            return
        if isinstance(event, OrderAccepted):
            first, o.accepted = not o.accepted, True
            if o.basket_id == self._flatten_into:  # one closing order, maybe several paper exits
                if first:
                    self._notify(o, NOTIFY["open"], status="open")
                    self._send_exchange(o, NOTIFY_EXCH["status"])
                return
            o.quantity = event.quantity
            if event.limit_price is not None:
                o.price = event.limit_price
            if event.stop_price is not None:
                o.trigger_price = event.stop_price
            self._notify(o, NOTIFY["open" if first else "modified"], status="open")
            self._send_exchange(o, NOTIFY_EXCH["status" if first else "modify"])
        elif isinstance(event, OrderFilled):
            self._fill(o, event)
        elif isinstance(event, OrderCancelled):
            self._complete(o, "Cancel", NOTIFY_EXCH["cancel"], cancelled_size=o.quantity - o.filled)
        elif isinstance(event, OrderExpired):
            self._complete(o, "Expire", NOTIFY_EXCH["cancel"], cancelled_size=o.quantity - o.filled)
        elif isinstance(event, OrderRejected):
            self._rejected(o, event.reason)

    def _child_or_flatten(self, event: OrderSubmitted) -> None:
        cid = event.client_order_id
        if event.role == "flatten" and self._flatten_into:
            self._by_cid[cid] = self._flatten_into
            return
        parent = self.orders.get(self._by_cid.get(event.parent_id, ""))
        kind = (
            STOP_MARKET
            if event.order_type == "stop"
            else LIMIT
            if event.order_type == "limit"
            else MARKET
        )
        o = SimOrder(
            basket_id=str(next(self._baskets)),
            user_tag=parent.user_tag if parent else "",
            symbol=event.symbol,
            side=BUY if event.side == "buy" else SELL,
            quantity=event.quantity,
            price_type=kind,
            price=event.limit_price or 0.0,
            trigger_price=event.stop_price or 0.0,
            original_basket_id=parent.basket_id if parent else "",
            bracket_type=TARGET_AND_STOP_STATIC if parent else 0,
        )
        self.orders[o.basket_id] = o
        self._by_cid[cid] = o.basket_id
        if parent is not None and event.role == "target":
            stop = next(
                (
                    x
                    for x in self.orders.values()
                    if x.original_basket_id == parent.basket_id
                    and x.price_type == STOP_MARKET
                    and x.status == "open"
                ),
                None,
            )
            if stop is not None:
                stop.linked_basket_ids, o.linked_basket_ids = o.basket_id, stop.basket_id
        self._notify(o, NOTIFY["received"], status="received")

    def _fill(self, o: SimOrder, event: OrderFilled) -> None:
        paid = o.avg_fill_price * o.filled + event.fill_price * event.quantity
        o.filled += event.quantity
        o.avg_fill_price = paid / o.filled
        ssboe, usecs = now_ssboe()
        fill_id = str(next(self._fill_ids))
        fill = {
            "fill_price": event.fill_price,
            "fill_size": event.quantity,
            "fill_id": fill_id,
            "fill_time": datetime.fromtimestamp(ssboe, UTC).strftime("%H:%M:%S"),
            "fill_date": datetime.fromtimestamp(ssboe, UTC).strftime("%Y%m%d"),
        }
        self.fills.append(
            message(
                3513,
                rq_handler_rp_code=["0"],
                basket_id=o.basket_id,
                account_id=self.account_id,
                symbol=self.contracts[o.symbol],
                exchange=self.exchange,
                trade_route=self.trade_route,
                transaction_type="BUY" if o.side == BUY else "SELL",
                price_type=str(o.price_type),
                price=o.price,
                trigger_price=o.trigger_price,
                avg_fill_price=o.avg_fill_price,
                total_fill_size=o.filled,
                total_unfilled_size=max(0, o.quantity - o.filled),
                ssboe=ssboe,
                usecs=usecs,
                **fill,
                **self._ids(),
            )
        )
        self._send_exchange(o, NOTIFY_EXCH["fill"], **fill)
        if o.filled >= o.quantity:
            self._complete(o, "Fill", None)
        self._move_net(
            o.symbol, event.quantity if o.side == BUY else -event.quantity, event.fill_price
        )
        bought_sold = self._day_fills.setdefault(o.symbol, [0, 0])
        bought_sold[0 if o.side == BUY else 1] += event.quantity
        for s in self.gateway.logged_in(PNL_PLANT):
            if self.account_id in s.pnl_updates:
                s.send(self._instrument_pnl(o.symbol), self._account_pnl())

    def _move_net(self, symbol: str, signed_qty: int, price: float) -> None:
        """Move the account's net position as an FCM books it: fills close the oldest first."""
        q, avg = self.net.get(symbol, [0, 0.0])
        new = q + signed_qty
        if q == 0 or (q > 0) == (signed_qty > 0):
            avg = (abs(q) * avg + abs(signed_qty) * price) / abs(new)
        elif (q > 0) != (new > 0):
            avg = price  # the fill turned the position round
        self.net[symbol] = [new, avg if new else 0.0]

    def _complete(self, o: SimOrder, reason: str, exch: int | None, **more: Any) -> None:
        o.status, o.completion_reason = "complete", reason
        if exch is not None:
            self._send_exchange(o, exch, **more)
        self._notify(o, NOTIFY["complete"], status="complete", completion_reason=reason)

    def _rejected(self, o: SimOrder, reason: str) -> None:
        o.text = reason
        o.status, o.completion_reason = "complete", "Reject"
        self._send_exchange(o, NOTIFY_EXCH["reject"], text=reason)
        self._notify(
            o, NOTIFY["complete"], status="complete", completion_reason="Reject", text=reason
        )

    def _common(self, o: SimOrder) -> dict[str, Any]:
        ssboe, usecs = now_ssboe()
        return {
            "user_tag": o.user_tag,
            "basket_id": o.basket_id,
            "original_basket_id": o.original_basket_id,
            "linked_basket_ids": o.linked_basket_ids,
            "user_id": self.user,
            "account_id": self.account_id,
            "symbol": self.contracts[o.symbol],
            "exchange": self.exchange,
            "trade_exchange": self.exchange,
            "trade_route": self.trade_route,
            "instrument_type": "Future",
            "quantity": o.quantity,
            "price": o.price,
            "trigger_price": o.trigger_price,
            "transaction_type": o.side,
            "duration": 1,
            "price_type": o.price_type,
            "orig_price_type": o.price_type,
            "manual_or_auto": 2,
            "bracket_type": o.bracket_type,
            "avg_fill_price": o.avg_fill_price,
            "total_fill_size": o.filled,
            "total_unfilled_size": max(0, o.quantity - o.filled) if o.status == "open" else 0,
            "currency": "USD",
            "ssboe": ssboe,
            "usecs": usecs,
            **self._ids(),
        }

    def _notify(self, o: SimOrder, notify_type: int, **more: Any) -> None:
        msg = message(351, notify_type=notify_type, **{**self._common(o), **more})
        self._to_order_sessions(msg)

    def _exchange(self, o: SimOrder, notify_type: int, **more: Any) -> Any:
        report = o.completion_reason.lower() if o.status == "complete" else "status"
        fields = {**self._common(o), "status": o.status, "report_type": report}
        if o.text:
            fields["text"] = o.text
        return message(352, notify_type=notify_type, **{**fields, **more})

    def _send_exchange(self, o: SimOrder, notify_type: int, **more: Any) -> None:
        self._to_order_sessions(self._exchange(o, notify_type, **more))

    def _to_order_sessions(self, msg: Any) -> None:
        for s in self.gateway.logged_in(ORDER_PLANT):
            if self.account_id in s.order_updates:
                s.send(msg)

    def _instrument_pnl(self, symbol: str, *, is_snapshot: bool = False) -> Any:
        q, avg = self.net.get(symbol, [0, 0.0])
        qty = int(q)
        bought, sold = self._day_fills.get(symbol, [0, 0])
        ssboe, usecs = now_ssboe()
        return message(
            450,
            is_snapshot=is_snapshot,
            account_id=self.account_id,
            symbol=self.contracts[symbol],
            exchange=self.exchange,
            product_code=symbol,
            instrument_type="Future",
            fill_buy_qty=bought,
            fill_sell_qty=sold,
            buy_qty=max(0, qty),
            sell_qty=max(0, -qty),
            avg_open_fill_price=avg,
            open_position_quantity=abs(qty),
            net_quantity=qty,
            ssboe=ssboe,
            usecs=usecs,
            **self._ids(),
        )

    def _account_pnl(self, *, is_snapshot: bool = False) -> Any:
        net = int(sum(q for q, _ in self.net.values()))
        bought = sum(b for b, _ in self._day_fills.values())
        sold = sum(s for _, s in self._day_fills.values())
        ssboe, usecs = now_ssboe()
        return message(
            451,
            is_snapshot=is_snapshot,
            account_id=self.account_id,
            fill_buy_qty=bought,
            fill_sell_qty=sold,
            net_quantity=net,
            open_position_quantity=int(sum(abs(q) for q, _ in self.net.values())),
            account_balance="50000.00",
            ssboe=ssboe,
            usecs=usecs,
            **self._ids(),
        )
