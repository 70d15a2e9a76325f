"""The `projectx` venue's half that turns the Gateway's updates into order events.

Order updates (`GatewayUserOrder`, `/api/Order/search`), trades
(`GatewayUserTrade`, `/api/Trade/search`) and positions (`GatewayUserPosition`)
are applied here, idempotently (trades by id), so a replay after a reconnect and
the live hub share one path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from infra.contracts import (
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderRole,
    OrderSide,
    OrderSubmitted,
    OrderType,
    VenueEvent,
    utc_now,
)
from trader.venues.base import BracketOrder, Position, child_order_id

__all__ = ["ProjectxUpdates"]

log = logging.getLogger(__name__)

OPEN, FILLED, CANCELLED, EXPIRED, REJECTED = 1, 2, 3, 4, 5
TYPE_LIMIT, TYPE_MARKET, TYPE_STOP = 1, 2, 4


@dataclass(slots=True)
class _Order:
    """Our record of one Gateway order."""

    client_order_id: str
    symbol: str
    role: OrderRole
    side: OrderSide
    order_type: OrderType
    quantity: int
    bracket: BracketOrder | None
    parent_id: str = ""
    limit_price: float | None = None
    stop_price: float | None = None
    venue_id: int = 0
    filled: int = 0
    avg_price: float = 0.0
    accepted: bool = False
    done: bool = False
    cancel_reason: str = ""


class ProjectxUpdates:
    """Our orders and positions, moved by the Gateway's updates; publishes order events."""

    name: ClassVar[str]
    source: str
    run_id: str
    contracts: dict[str, dict[str, Any]]
    _symbol_of: dict[str, str]
    _orders: dict[str, _Order]
    _by_venue: dict[int, str]
    _trades: set[int]
    _positions: dict[str, Position]
    _used: set[str]
    instruments: dict[str, Any]
    #: the Gateway's orders and trades as last fetched (`/api/Order/search`, `/api/Trade/search`)
    _history: tuple[list[dict[str, Any]], list[dict[str, Any]]]

    if TYPE_CHECKING:

        def _publish(self, event: VenueEvent) -> None: ...

    def _replay(self, orders: list[dict[str, Any]], trades: list[dict[str, Any]]) -> None:
        """Apply the Gateway's orders and trades in the order they happened (trades by id once).

        Cancels go last: an order's id tells when it was placed, not when it was
        cancelled, and a bracket's stop (placed first) is cancelled after its target's
        fill, which must be known to name the cancel `oco`.
        """
        pending = sorted(trades, key=lambda t: int(t["id"]))
        cancelled = []
        for order in sorted(orders, key=lambda o: int(o["id"])):
            while pending and int(pending[0]["orderId"]) <= int(order["id"]):
                self._apply_trade(pending.pop(0))
            if int(order["status"]) == CANCELLED:
                cancelled.append(order)
            else:
                self._apply_order(order)
        for trade in pending:
            self._apply_trade(trade)
        for order in cancelled:
            self._apply_order(order)

    def restore(self, events: Iterable[VenueEvent]) -> list[str]:
        """Take back the orders of a previous process from its published order events.

        Each order is matched to the Gateway's by the venue order id its events carry,
        so fills, cancels, `modify` and `flatten` work on it again; what the Gateway
        did while no process listened (fills, the OCO cancel) is published now, from
        the orders and trades fetched at connect. Return the entry ids whose bracket
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
                if e.venue_fill_id.isdigit():
                    self._trades.add(int(e.venue_fill_id))
            else:
                ended.add(e.client_order_id)
        for cid, sub in subs.items():
            self._used.add(cid)
            if cid in self._orders:
                continue
            got, ack = fills.get(cid, []), accepted.get(cid)
            o = _Order(
                cid,
                sub.symbol,
                sub.role,
                sub.side,
                sub.order_type,
                ack.quantity if ack else sub.quantity,
                None,
                parent_id=sub.parent_id,
                limit_price=(ack.limit_price if ack else None) or sub.limit_price,
                stop_price=(ack.stop_price if ack else None) or sub.stop_price,
                filled=sum(f.quantity for f in got),
                accepted=ack is not None,
            )
            if o.filled:
                o.avg_price = sum(f.fill_price * f.quantity for f in got) / o.filled
            o.done = cid in ended or o.filled >= o.quantity
            self._orders[cid] = o
            vid = sub.venue_order_id or (ack.venue_order_id if ack else "")
            if vid.isdigit():
                self._placed(o, int(vid))
        for entry in [o for o in self._orders.values() if o.role == "entry" and o.bracket is None]:
            self._rebuild_bracket(entry)
        held = dict(self._positions)  # already the Gateway's: the replay must not move them
        self._replay(*self._history)
        self._positions = held
        restored: list[str] = []
        for o in self._orders.values():
            if o.role in ("stop", "target", "entry") and not o.done:
                parent = o.parent_id or o.client_order_id
                if parent in subs and parent not in restored:
                    restored.append(parent)
        return restored

    def _rebuild_bracket(self, entry: _Order) -> None:
        """Give a restored entry its bracket (distances from its children) and child records."""
        sign = 1 if entry.side == "buy" else -1
        stop = self._orders.get(child_order_id(entry.client_order_id, "stop"))
        target = self._orders.get(child_order_id(entry.client_order_id, "target"))
        ref = entry.avg_price or entry.limit_price or 0.0
        tick = (
            float(self.instruments[entry.symbol].tick_size)
            if entry.symbol in self.instruments
            else 0.25
        )
        stop_d = abs(ref - stop.stop_price) if stop and stop.stop_price and ref else 4 * tick
        target_d = (
            abs(target.limit_price - ref) if target and target.limit_price and ref else 8 * tick
        )
        b = BracketOrder(
            client_order_id=entry.client_order_id,
            symbol=entry.symbol,
            side=entry.side,
            quantity=entry.quantity,
            stop_distance=max(stop_d, tick),
            target_distance=max(target_d, tick),
            entry_type="limit" if entry.order_type == "limit" else "market",
            limit_price=entry.limit_price if entry.order_type == "limit" else None,
        )
        entry.bracket = b
        exit_side: OrderSide = "sell" if sign > 0 else "buy"
        legs: tuple[tuple[OrderRole, OrderType], ...] = (("stop", "stop"), ("target", "limit"))
        for role, kind in legs:
            cid = b.child_id(role)
            child = self._orders.get(cid)
            if child is None:  # the Gateway places it when the entry fills
                child = _Order(
                    cid,
                    entry.symbol,
                    role,
                    exit_side,
                    kind,
                    entry.quantity,
                    b,
                    parent_id=entry.client_order_id,
                    done=entry.done and not entry.filled,
                )
                self._orders[cid] = child
            child.bracket = b
        self._used.add(b.child_id("flatten"))

    def _placed(self, o: _Order, venue_id: int) -> None:
        if venue_id and not o.venue_id:
            o.venue_id = venue_id
            self._by_venue[venue_id] = o.client_order_id

    # the Gateway's updates -> order events -------------------------------------

    def _on_hub(self, kind: str, args: list[Any]) -> None:
        for item in args or []:
            data = item.get("data", item) if isinstance(item, dict) else None
            if not isinstance(data, dict):
                log.warning("projectx: hub %s update without data: %r", kind, item)
                continue
            try:
                if kind == "order":
                    self._apply_order(data)
                elif kind == "trade":
                    self._apply_trade(data)
                else:
                    self._apply_position(data)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("projectx: malformed hub %s update %r: %s", kind, data, exc)

    def _identify(self, data: dict[str, Any]) -> _Order | None:
        """Find our order behind a Gateway order: by id, by tag, or as a bracket's child."""
        vid = int(data["id"])
        cid = self._by_venue.get(vid) or (data.get("customTag") or "")
        o = self._orders.get(cid)
        if o is None:
            symbol = self._symbol_of.get(str(data.get("contractId")))
            role = {TYPE_STOP: "stop", TYPE_LIMIT: "target", TYPE_MARKET: "flatten"}.get(
                int(data["type"])
            )
            o = next(
                (
                    c
                    for c in self._orders.values()
                    if c.symbol == symbol
                    and c.role == role
                    and not c.venue_id
                    and not c.done
                    and (role == "flatten" or (self._orders.get(c.parent_id) or c).filled > 0)
                ),
                None,
            )
        if o is not None and not o.venue_id:
            self._placed(o, vid)
        return o

    def _apply_order(self, data: dict[str, Any]) -> None:
        o = self._identify(data)
        if o is None or o.done:
            return
        status = int(data["status"])
        limit, stop = _price(data.get("limitPrice")), _price(data.get("stopPrice"))
        if status in (OPEN, FILLED):
            first = not o.accepted
            changed = (
                (o.order_type == "limit" and limit is not None and limit != o.limit_price)
                or (o.order_type == "stop" and stop is not None and stop != o.stop_price)
                or int(data["size"]) != o.quantity
            )
            o.quantity = int(data["size"])
            if o.order_type == "limit" and limit is not None:
                o.limit_price = limit
            if o.order_type == "stop" and stop is not None:
                o.stop_price = stop
            if first and o.role in ("stop", "target"):
                self._announce(o)
            if first or changed:
                self._accepted(o)
        elif status == CANCELLED:
            self._close(o, self._oco_reason(o) or o.cancel_reason or "cancelled by the venue")
        elif status == EXPIRED:
            o.done = True
            if o.accepted:
                self._publish(
                    OrderExpired(**self._common(o), reason="expired", cumulative_quantity=o.filled)
                )
        elif status == REJECTED:
            self._reject(o, "rejected by the Gateway")

    def _apply_trade(self, data: dict[str, Any]) -> None:
        tid = int(data["id"])
        if tid in self._trades or data.get("voided"):
            return
        cid = self._by_venue.get(int(data["orderId"]))
        o = self._orders.get(cid or "")
        if o is None:
            return
        self._trades.add(tid)
        qty, price = int(data["size"]), float(data["price"])
        o.avg_price = (o.avg_price * o.filled + price * qty) / (o.filled + qty)
        o.filled += qty
        if not o.accepted:
            self._accepted(o)
        self._publish(
            OrderFilled(
                **self._common(o),
                role=o.role,
                side=o.side,
                fill_price=price,
                quantity=qty,
                cumulative_quantity=o.filled,
                leaves_quantity=max(0, o.quantity - o.filled),
                commission_usd=max(0.0, float(data.get("fees") or 0.0)),
                venue_fill_id=str(tid),
            )
        )
        self._position_after_fill(o.symbol, qty if o.side == "buy" else -qty, price)
        if o.filled >= o.quantity:
            o.done = True

    def _position_after_fill(self, symbol: str, signed_qty: int, price: float) -> None:
        """Move the position by a fill at once; the hub's position update confirms it after."""
        held = self._positions.get(symbol)
        q, avg = (held.quantity, held.avg_price) if held else (0, 0.0)
        new = q + signed_qty
        if new == 0:
            self._positions.pop(symbol, None)
            return
        if q == 0 or (q > 0) == (signed_qty > 0):
            avg = (abs(q) * avg + abs(signed_qty) * price) / abs(new)
        elif (q > 0) != (new > 0):
            avg = price  # the fill turned the position round
        name = self.contracts.get(symbol, {}).get("name", "")
        self._positions[symbol] = Position(symbol, new, avg, name)

    def _apply_position(self, data: dict[str, Any]) -> None:
        symbol = self._symbol_of.get(str(data.get("contractId")))
        if symbol is None:
            return
        size = int(data.get("size") or 0)
        if size == 0:
            self._positions.pop(symbol, None)
            return
        sign = 1 if int(data["type"]) == 1 else -1
        name = self.contracts[symbol]["name"]
        self._positions[symbol] = Position(symbol, sign * size, float(data["averagePrice"]), name)

    def _common(self, o: _Order) -> dict[str, Any]:
        return {
            "ts_event": utc_now(),
            "venue": self.name,
            "symbol": o.symbol,
            "contract": self.contracts.get(o.symbol, {}).get("name", ""),
            "source": self.source,
            "run_id": self.run_id,
            "client_order_id": o.client_order_id,
            "venue_order_id": str(o.venue_id) if o.venue_id else "",
        }

    def _announce(self, o: _Order, reason: str = "") -> None:
        b = o.bracket
        self._publish(
            OrderSubmitted(
                **self._common(o),
                role=o.role,
                side=o.side,
                quantity=o.quantity,
                order_type=o.order_type,
                limit_price=o.limit_price if o.order_type == "limit" else None,
                stop_price=o.stop_price if o.order_type == "stop" else None,
                parent_id=o.parent_id,
                oco_group=o.parent_id if o.role in ("stop", "target") else "",
                signal_id=b.signal_id if b else "",
                strategy=b.strategy if b else "",
                reason=reason,
            )
        )

    def _accepted(self, o: _Order) -> None:
        o.accepted = True
        self._publish(
            OrderAccepted(
                **self._common(o),
                quantity=o.quantity,
                limit_price=o.limit_price if o.order_type == "limit" else None,
                stop_price=o.stop_price if o.order_type == "stop" else None,
            )
        )

    def _oco_reason(self, o: _Order) -> str:
        if o.role not in ("stop", "target") or o.bracket is None:
            return ""
        other = self._orders.get(o.bracket.child_id("target" if o.role == "stop" else "stop"))
        return "oco" if other is not None and other.filled else ""

    def _close(self, o: _Order, reason: str) -> None:
        was, o.done = o.accepted, True
        if o.role == "entry" and o.bracket is not None and not o.filled:
            for role in ("stop", "target"):
                child = self._orders.get(o.bracket.child_id(role))
                if child is not None:
                    child.done = True
        if was:
            self._publish(
                OrderCancelled(**self._common(o), reason=reason, cumulative_quantity=o.filled)
            )

    def _reject(self, o: _Order, reason: str) -> None:
        if o.done:
            return
        o.done = True
        if o.bracket is not None and o.role == "entry":
            for role in ("stop", "target"):
                child = self._orders.get(o.bracket.child_id(role))
                if child is not None:
                    child.done = True
        self._publish(OrderRejected(**self._common(o), reason=reason or "rejected"))


def _price(value: object) -> float | None:
    if value is None:
        return None
    price = float(value)  # type: ignore[arg-type]
    return price if price > 0 else None
