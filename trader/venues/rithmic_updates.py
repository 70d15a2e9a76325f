"""The `rithmic` venue's half that turns R|Protocol notifications into order events.

Live `RithmicOrderNotification`s (351) and `ExchangeOrderNotification`s (352), the
order history's snapshots and the fill history (3513) after a (re)connect, and a
previous process's order events (`restore`) all go through here, idempotently
(fills by `fill_id`), so a catch-up and the live stream share one path.

Which order a notification is about: its `basket_id` once known; else its
`user_tag` (our client order id, for an entry or a flatten); else, for a
bracket's stop or target that the gateway placed after the entry's fill, its
`original_basket_id` (the entry's basket) and price type (`STOP_MARKET`: stop,
`LIMIT`: target).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from infra.contracts import (
    OrderAccepted,
    OrderCancelled,
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
from trader.venues.base import BracketOrder, Position, UnknownOrder, WorkingOrder

__all__ = ["RithmicUpdates"]

log = logging.getLogger(__name__)

#: PriceType
LIMIT, MARKET, STOP_LIMIT, STOP_MARKET = 1, 2, 3, 4
#: RithmicOrderNotification.NotifyType
OPEN, MODIFIED, COMPLETE, MODIFICATION_FAILED = 13, 14, 15, 16
#: ExchangeOrderNotification.NotifyType
X_CANCEL, X_FILL, X_REJECT = 3, 5, 6


@dataclass(slots=True)
class _Order:
    """Our record of one Rithmic order (basket)."""

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
    basket_id: str = ""
    filled: int = 0
    avg_price: float = 0.0
    accepted: bool = False
    announced: bool = False
    done: bool = False
    unsure: bool = False  # its request's answer was lost with the connection
    cancel_reason: str = ""


class RithmicUpdates:
    """Our orders and positions, moved by the gateway's notifications; publishes order events."""

    name: ClassVar[str]
    source: str
    run_id: str
    contracts: dict[str, str]
    commission_per_contract_usd: float
    _symbol_of: dict[str, str]
    _orders: dict[str, _Order]
    _by_basket: dict[str, str]
    _fills: set[str]
    _positions: dict[str, Position]
    _used: set[str]
    instruments: dict[str, Any]
    #: the gateway's order snapshots and fills as last fetched at (re)connect
    _history: tuple[list[Any], list[Any]]
    account_pnl: dict[str, Any]

    if TYPE_CHECKING:

        def _publish(self, event: VenueEvent) -> None: ...

    # live notifications ----------------------------------------------------------

    def _placed(self, o: _Order, basket_id: str) -> None:
        if basket_id and not o.basket_id:
            o.basket_id = basket_id
            self._by_basket[basket_id] = o.client_order_id

    def _identify(self, n: Any) -> _Order | None:
        """Find our order behind a notification (see the module docstring)."""
        cid = self._by_basket.get(n.basket_id)
        if cid is not None:
            return self._orders.get(cid)
        o: _Order | None = None
        if not n.original_basket_id:
            o = self._orders.get(n.user_tag)
            if o is not None and o.basket_id:
                return None  # a basket of that tag we did not send
        else:
            parent = self._orders.get(self._by_basket.get(n.original_basket_id, ""))
            role = {STOP_MARKET: "stop", STOP_LIMIT: "stop", LIMIT: "target"}.get(n.price_type)
            if parent is not None and parent.bracket is not None and role is not None:
                o = self._orders.get(parent.bracket.child_id(role))  # type: ignore[arg-type]
        if o is not None:
            self._placed(o, n.basket_id)
        return o

    def _on_rithmic_order(self, n: Any) -> None:
        o = self._identify(n)
        if o is None or o.done:
            return
        kind = int(n.notify_type)
        if kind == OPEN:
            self._take_terms(o, n)
            if not o.accepted:
                self._accept(o)
        elif kind == MODIFIED:
            self._take_terms(o, n)
            self._accepted(o)
        elif kind == MODIFICATION_FAILED:
            log.warning("rithmic: modify of %s failed: %s", o.client_order_id, n.text)
        elif kind == COMPLETE:
            why = n.completion_reason
            if why == "Reject":
                self._reject(o, n.text or "rejected by Rithmic")
            elif why in ("Cancel", "Expire"):
                self._close(o, self._cancel_reason(o), expired=why == "Expire")

    def _on_exchange_order(self, n: Any) -> None:
        if n.is_snapshot:
            return  # snapshots are read by the catch-up that asked for them
        o = self._identify(n)
        if o is None:
            return
        kind = int(n.notify_type)
        if kind == X_FILL:
            self._apply_fill(o, n.fill_id, int(n.fill_size), float(n.fill_price))
        elif kind == X_CANCEL and not o.done:
            self._close(o, self._cancel_reason(o))
        elif kind == X_REJECT and not o.done:
            self._reject(o, n.text or "rejected by Rithmic")

    def _take_terms(self, o: _Order, n: Any) -> None:
        if n.quantity:
            o.quantity = int(n.quantity)
        if o.order_type == "limit" and n.price > 0:
            o.limit_price = float(n.price)
        if o.order_type == "stop" and n.trigger_price > 0:
            o.stop_price = float(n.trigger_price)

    def _accept(self, o: _Order) -> None:
        if not o.announced:
            self._announce(o)
        self._accepted(o)

    def _apply_fill(self, o: _Order, fill_id: str, qty: int, price: float) -> None:
        if not fill_id or fill_id in self._fills or qty <= 0:
            return
        self._fills.add(fill_id)
        o.avg_price = (o.avg_price * o.filled + price * qty) / (o.filled + qty)
        o.filled += qty
        o.done = o.filled >= o.quantity
        if not o.accepted:
            self._accept(o)
        self._position_after_fill(o.symbol, qty if o.side == "buy" else -qty, price)
        self._publish(
            OrderFilled(
                **self._common(o),
                role=o.role,
                side=o.side,
                fill_price=price,
                quantity=qty,
                cumulative_quantity=o.filled,
                leaves_quantity=max(0, o.quantity - o.filled),
                commission_usd=self.commission_per_contract_usd * qty,
                venue_fill_id=fill_id,
            )
        )
        self._after_flatten_news(o)

    def _after_flatten_news(self, o: _Order) -> None:
        """React to a fill, an acceptance or a refusal while a flatten is in progress (the venue's)."""

    def _position_after_fill(self, symbol: str, signed_qty: int, price: float) -> None:
        """Move the position by a fill at once; the PnL plant's snapshot confirms it at reconnects."""
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
        self._positions[symbol] = Position(symbol, new, avg, self.contracts.get(symbol, ""))

    def _apply_positions(self, rows: list[Any]) -> None:
        """Set the positions from the PnL plant's instrument snapshots."""
        self._positions.clear()
        for r in rows:
            symbol = self._symbol_of.get(r.symbol)
            if symbol is None or not r.net_quantity:
                continue
            self._positions[symbol] = Position(
                symbol, int(r.net_quantity), float(r.avg_open_fill_price), r.symbol
            )

    def _holding_entry(self, symbol: str) -> _Order | None:
        """Return the filled entry whose bracket still works an order (else the last filled)."""
        filled = [
            o
            for o in self._orders.values()
            if o.role == "entry" and o.symbol == symbol and o.filled
        ]
        for o in reversed(filled):
            if o.bracket is None:
                continue
            kids = [self._orders.get(o.bracket.child_id(r)) for r in ("stop", "target")]
            if any(k is not None and k.accepted and not k.done for k in kids):
                return o
        return filled[-1] if filled else None

    def _on_account_pnl(self, update: Any) -> None:
        self.account_pnl = {
            "account_balance": update.account_balance,
            "day_pnl": update.day_pnl,
            "open_position_pnl": update.open_position_pnl,
            "closed_position_pnl": update.closed_position_pnl,
            "net_quantity": int(update.net_quantity),
        }

    def _record(
        self,
        cid: str,
        symbol: str,
        role: OrderRole,
        side: OrderSide,
        kind: OrderType,
        qty: int,
        bracket: BracketOrder | None,
        **more: Any,
    ) -> _Order:
        o = _Order(cid, symbol, role, side, kind, qty, bracket, **more)
        self._orders[cid] = o
        return o

    def _working(self, client_order_id: str) -> _Order:
        o = self._orders.get(client_order_id)
        if o is None or o.done or not o.accepted or not o.basket_id:
            raise UnknownOrder(f"no working order {client_order_id!r}")
        return o

    def positions(self) -> list[Position]:
        """Return the account's open positions (from fills; the PnL plant's at each connect)."""
        return list(self._positions.values())

    def working_orders(self) -> list[WorkingOrder]:
        """Return the orders Rithmic works for us, with our ids."""
        return [
            WorkingOrder(
                client_order_id=o.client_order_id,
                symbol=o.symbol,
                role=o.role,
                side=o.side,
                quantity=o.quantity,
                order_type=o.order_type,
                filled_quantity=o.filled,
                limit_price=o.limit_price,
                stop_price=o.stop_price,
                parent_id=o.parent_id,
                venue_order_id=o.basket_id,
                contract=self.contracts.get(o.symbol, ""),
            )
            for o in self._orders.values()
            if o.accepted and not o.done
        ]

    # events -------------------------------------------------------------------

    def _common(self, o: _Order) -> dict[str, Any]:
        return {
            "ts_event": utc_now(),
            "venue": self.name,
            "symbol": o.symbol,
            "contract": self.contracts.get(o.symbol, ""),
            "source": self.source,
            "run_id": self.run_id,
            "client_order_id": o.client_order_id,
            "venue_order_id": o.basket_id,
        }

    def _announce(self, o: _Order, reason: str = "") -> None:
        o.announced = True
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
        self._after_flatten_news(o)

    def _cancel_reason(self, o: _Order) -> str:
        if o.role in ("stop", "target") and o.bracket is not None:
            other = self._orders.get(o.bracket.child_id("target" if o.role == "stop" else "stop"))
            if other is not None and other.filled:
                return "oco"
        return o.cancel_reason or "cancelled by the venue"

    def _close(self, o: _Order, reason: str, expired: bool = False) -> None:
        was, o.done = o.accepted, True
        if o.role == "entry" and o.bracket is not None and not o.filled:
            for role in ("stop", "target"):
                child = self._orders.get(o.bracket.child_id(role))
                if child is not None:
                    child.done = True
        if not was:
            return
        if expired:
            self._publish(
                OrderExpired(**self._common(o), reason="expired", cumulative_quantity=o.filled)
            )
        else:
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
        self._after_flatten_news(o)
