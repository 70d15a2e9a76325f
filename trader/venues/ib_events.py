"""The `ib` venue's half that turns the gateway's answers (and a journal) into order events.

`IbOrderEvents` is mixed into `trader.venues.ib.IbVenue`: `orderStatus` changes,
executions with their commission reports, the children moved to the entry's fill,
OCO cancels and rejections become `OrderSubmitted` ... `OrderRejected`; `restore`
takes back a previous process's orders from the events it published.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ib_async import IB, Fill, Future, Order, Trade

from infra.contracts import (
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    OrderRole,
    OrderSide,
    OrderSubmitted,
    OrderType,
    VenueEvent,
    utc_now,
)
from trader.core.instruments import Instrument
from trader.venues.base import BracketOrder, child_order_id

__all__ = ["IbOrder", "IbOrderEvents", "ib_price"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class IbOrder:
    """Our record of one IB order."""

    client_order_id: str
    symbol: str
    role: OrderRole
    side: OrderSide
    order_type: OrderType
    ib: Order
    bracket: BracketOrder | None
    parent_id: str = ""
    filled: int = 0
    avg_price: float = 0.0
    announced: bool = False  # OrderSubmitted published
    accepted: bool = False
    done: bool = False
    cancel_reason: str = ""

    @property
    def quantity(self) -> int:
        return int(self.ib.totalQuantity)


class IbOrderEvents:
    """Order events from the gateway's answers (mixed into `IbVenue`)."""

    name: ClassVar[str]
    source: str
    run_id: str
    ib: IB
    instruments: dict[str, Instrument]
    contracts: dict[str, Future]
    _orders: dict[str, IbOrder]
    _execs: set[str]
    _by_ib: dict[int, str]
    _settled: asyncio.Event
    _used: set[str]
    commission_wait_s: float

    if TYPE_CHECKING:

        def _publish(self, event: VenueEvent) -> None: ...

        def _catch_up(self, live: set[int] | None = None) -> None: ...

    def restore(self, events: Iterable[VenueEvent]) -> list[str]:
        """Take back the orders of a previous process from its published order events.

        Each order is matched to the gateway's open orders by `orderRef`, so fills,
        cancels, `modify` and `flatten` work on it again; fills the gateway made while
        no process listened are published now. Return the entry ids whose bracket
        still holds a position or works an order.
        """
        subs: dict[str, OrderSubmitted] = {}
        accepted: dict[str, OrderAccepted] = {}
        fills: dict[str, list[OrderFilled]] = {}
        ended: set[str] = set()
        for e in events:
            if not isinstance(e, OrderEvent):
                continue
            if isinstance(e, OrderSubmitted):
                subs[e.client_order_id] = e
            elif isinstance(e, OrderAccepted):
                accepted[e.client_order_id] = e
            elif isinstance(e, OrderFilled):
                fills.setdefault(e.client_order_id, []).append(e)
                self._execs.add(e.venue_fill_id)
            else:
                ended.add(e.client_order_id)
        live = {t.order.orderRef: t.order for t in self.ib.openTrades() if t.order.orderRef}
        restored: list[str] = []
        for cid, sub in subs.items():
            self._used.add(cid)
            if cid in self._orders:
                continue
            got = fills.get(cid, [])
            filled = sum(f.quantity for f in got)
            ack = accepted.get(cid)
            ib_order = live.get(cid) or Order(
                orderId=int(sub.venue_order_id or (ack.venue_order_id if ack else "") or 0),
                totalQuantity=ack.quantity if ack else sub.quantity,
                lmtPrice=(ack.limit_price if ack else sub.limit_price) or 0.0,
                auxPrice=(ack.stop_price if ack else sub.stop_price) or 0.0,
            )
            o = IbOrder(cid, sub.symbol, sub.role, sub.side, sub.order_type, ib_order, None)
            o.parent_id, o.filled, o.announced, o.accepted = sub.parent_id, filled, True, True
            if filled:
                o.avg_price = sum(f.fill_price * f.quantity for f in got) / filled
            o.done = cid in ended or filled >= o.quantity  # the rest: `_catch_up` decides
            self._orders[cid] = o
            if ib_order.orderId:
                self._by_ib[ib_order.orderId] = cid
        children = [o for o in self._orders.values() if o.parent_id in self._orders]
        for o in children:
            entry = self._orders[o.parent_id]
            o.bracket = entry.bracket = entry.bracket or self._bracket_of(entry)
        self._catch_up()
        for o in children:
            if not o.done and o.parent_id not in restored:
                restored.append(o.parent_id)
        return restored

    def _bracket_of(self, entry: IbOrder) -> BracketOrder:
        """Return a bracket for a restored entry (distances from its children's prices)."""
        tick = self.instruments[entry.symbol].tick_size
        stop = self._orders.get(child_order_id(entry.client_order_id, "stop"))
        target = self._orders.get(child_order_id(entry.client_order_id, "target"))
        stop_px = ib_price(stop.ib.auxPrice) if stop else None
        target_px = ib_price(target.ib.lmtPrice) if target else None
        return BracketOrder(
            entry.client_order_id,
            entry.symbol,
            entry.side,
            max(1, entry.filled or entry.quantity),
            abs(entry.avg_price - stop_px) or tick if stop_px else tick,
            abs(target_px - entry.avg_price) or tick if target_px else tick,
        )

    def _common(self, o: IbOrder) -> dict[str, Any]:
        c = self.contracts.get(o.symbol)
        return {
            "ts_event": utc_now(),
            "venue": self.name,
            "symbol": o.symbol,
            "contract": c.localSymbol if c is not None else "",
            "source": self.source,
            "run_id": self.run_id,
            "client_order_id": o.client_order_id,
            "venue_order_id": str(o.ib.orderId) if o.ib.orderId else "",
        }

    def _announce(self, o: IbOrder, reason: str = "") -> None:
        b = o.bracket
        o.announced = True
        self._publish(
            OrderSubmitted(
                **self._common(o),
                role=o.role,
                side=o.side,
                quantity=o.quantity,
                order_type=o.order_type,
                limit_price=ib_price(o.ib.lmtPrice) if o.order_type == "limit" else None,
                stop_price=ib_price(o.ib.auxPrice) if o.order_type == "stop" else None,
                parent_id=o.parent_id,
                oco_group=o.parent_id if o.role in ("stop", "target") else "",
                signal_id=b.signal_id if b else "",
                strategy=b.strategy if b else "",
                reason=reason,
            )
        )

    def _accepted(self, o: IbOrder) -> None:
        o.accepted = True
        self._publish(
            OrderAccepted(
                **self._common(o),
                quantity=o.quantity,
                limit_price=ib_price(o.ib.lmtPrice) if o.order_type == "limit" else None,
                stop_price=ib_price(o.ib.auxPrice) if o.order_type == "stop" else None,
            )
        )

    def _on_status(self, trade: Trade) -> None:
        cid = self._by_ib.get(trade.order.orderId)
        o = self._orders.get(cid or "")
        if o is None or o.done:
            return
        status = trade.orderStatus.status
        if status in ("Submitted", "PreSubmitted") and o.announced and not o.accepted:
            self._accepted(o)
        elif status in ("Cancelled", "ApiCancelled", "Inactive"):
            entry = trade.log[-1] if trade.log else None
            if entry is not None and entry.errorCode == 201 and not o.filled:
                self._reject(o, entry.message.partition("reason:")[2].strip() or entry.message)
            else:
                self._close(o, self._oco_reason(o) or o.cancel_reason or "cancelled by the venue")

    def _on_exec(self, trade: Trade, fill: Fill) -> None:
        """Wait `commission_wait_s` for the execution's commission report, then publish anyway."""
        cid = self._by_ib.get(trade.order.orderId)
        if cid is None or self.commission_wait_s <= 0:
            return
        asyncio.get_event_loop().call_later(
            self.commission_wait_s, self._fill_without_commission, cid, fill
        )

    def _fill_without_commission(self, cid: str, fill: Fill) -> None:
        o = self._orders.get(cid)
        if o is not None and fill.execution.execId not in self._execs:
            log.warning(
                "ib: no commission report for execution %s; 0 recorded", fill.execution.execId
            )
            self._fill(o, fill, 0.0)

    def _on_commission(self, trade: Trade, fill: Fill, report: Any) -> None:
        cid = self._by_ib.get(trade.order.orderId)
        o = self._orders.get(cid or "")
        if o is not None:
            self._fill(o, fill, report.commission)

    def _fill(self, o: IbOrder, fill: Fill, commission: float) -> None:
        ex = fill.execution
        if ex.execId in self._execs:
            return
        self._execs.add(ex.execId)
        qty = int(ex.shares)
        o.avg_price = (o.avg_price * o.filled + ex.price * qty) / (o.filled + qty)
        o.filled += qty
        if not o.announced:  # a child filled before we moved it (e.g. missed while away)
            self._announce(o)
        self._publish(
            OrderFilled(
                **self._common(o),
                role=o.role,
                side=o.side,
                fill_price=ex.price,
                quantity=qty,
                cumulative_quantity=o.filled,
                leaves_quantity=max(0, o.quantity - o.filled),
                commission_usd=max(0.0, commission),
                venue_fill_id=ex.execId,
            )
        )
        if o.filled < o.quantity:
            return
        o.done = True
        self._check_settled()
        if o.role == "entry":
            self._anchor_children(o)

    def _anchor_children(self, entry: IbOrder) -> None:
        """Move the children to distances from the entry's average price, then announce them."""
        b = entry.bracket
        if b is None:
            return
        inst = self.instruments[entry.symbol]
        sign = b.sign
        prices = {
            "stop": inst.round_price(entry.avg_price - sign * b.stop_distance),
            "target": inst.round_price(entry.avg_price + sign * b.target_distance),
        }
        for role, price in prices.items():
            child = self._orders.get(b.child_id(role))  # type: ignore[arg-type]
            if child is None or child.done:
                continue
            current = ib_price(child.ib.auxPrice if role == "stop" else child.ib.lmtPrice) or 0.0
            if abs(current - price) > inst.tick_size / 2 and self.ib.isConnected():
                if role == "stop":
                    child.ib.auxPrice = price
                else:
                    child.ib.lmtPrice = price
                child.ib.transmit = True
                self.ib.placeOrder(self.contracts[entry.symbol], child.ib)
            self._announce(child)
            self._accepted(child)

    def _check_settled(self) -> None:
        if not any(o.role == "flatten" and not o.done for o in self._orders.values()):
            self._settled.set()

    def _oco_reason(self, o: IbOrder) -> str:
        if o.role not in ("stop", "target") or o.bracket is None:
            return ""
        other = self._orders.get(o.bracket.child_id("target" if o.role == "stop" else "stop"))
        return "oco" if other is not None and other.filled else ""

    def _close(self, o: IbOrder, reason: str) -> None:
        o.done = True
        self._check_settled()
        if not o.announced:
            return  # a child that never worked for us (its entry did not fill)
        self._publish(
            OrderCancelled(**self._common(o), reason=reason, cumulative_quantity=o.filled)
        )

    def _reject(self, o: IbOrder, reason: str) -> None:
        o.done = True
        self._check_settled()
        if o.announced:
            self._publish(OrderRejected(**self._common(o), reason=reason or "rejected"))


def ib_price(value: object) -> float | None:
    """Return an IB price, None where IB means unset."""
    if value is None:
        return None
    price = float(value)  # type: ignore[arg-type]
    return price if 0 < price < 1e300 else None
