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

    # catch-up ------------------------------------------------------------------

    def _replay(self, snapshots: list[Any], fills: list[Any]) -> None:
        """Apply order snapshots and fills in the order they happened (fills by id once)."""
        latest = {s.basket_id: s for s in snapshots}
        order = sorted(latest.values(), key=lambda s: _num(s.basket_id))
        pending = sorted(fills, key=lambda f: (_num(f.basket_id), _num(f.fill_id)))
        for snap in order:
            while pending and _num(pending[0].basket_id) < _num(snap.basket_id):
                self._fill_row(pending.pop(0))
            self._apply_snapshot(snap)
            while pending and pending[0].basket_id == snap.basket_id:
                self._fill_row(pending.pop(0))
        for f in pending:
            self._fill_row(f)
        for snap in order:
            if snap.status == "complete":
                self._terminal(snap)

    def _apply_snapshot(self, snap: Any) -> None:
        o = self._identify(snap)
        if o is None or o.done or snap.report_type == "reject":
            return
        self._take_terms(o, snap)
        if not o.accepted:
            self._accept(o)

    def _terminal(self, snap: Any) -> None:
        o = self._identify(snap)
        if o is None or o.done:
            return
        kind = snap.report_type
        if kind == "reject":
            self._reject(o, snap.text or "rejected by Rithmic")
        elif kind in ("cancel", "expire"):
            self._close(o, self._cancel_reason(o), expired=kind == "expire")

    def _fill_row(self, row: Any) -> None:
        cid = self._by_basket.get(row.basket_id)
        o = self._orders.get(cid or "")
        if o is not None:
            self._apply_fill(o, row.fill_id, int(row.fill_size), float(row.fill_price))

    def restore(self, events: Iterable[VenueEvent]) -> list[str]:
        """Take back the orders of a previous process from its published order events.

        Each order is matched to the gateway's by the basket id its events carry, so
        fills, cancels, `modify` and `flatten` work on it again; what the gateway did
        while no process listened is published now, from the order and fill history
        fetched at connect. Return the entry ids whose bracket still holds a position
        or works an order.
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
                self._fills.add(e.venue_fill_id)
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
                announced=True,
            )
            if o.filled:
                o.avg_price = sum(f.fill_price * f.quantity for f in got) / o.filled
            o.done = cid in ended or o.filled >= o.quantity
            self._orders[cid] = o
            self._placed(o, sub.venue_order_id or (ack.venue_order_id if ack else ""))
        for entry in [o for o in self._orders.values() if o.role == "entry" and o.bracket is None]:
            self._rebuild_bracket(entry)
        held = dict(self._positions)  # already the gateway's: the replay must not move them
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
        stop = self._orders.get(child_order_id(entry.client_order_id, "stop"))
        target = self._orders.get(child_order_id(entry.client_order_id, "target"))
        ref = entry.avg_price or entry.limit_price or 0.0
        inst = self.instruments.get(entry.symbol)
        tick = float(inst.tick_size) if inst is not None else 0.25
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
        exit_side: OrderSide = "sell" if entry.side == "buy" else "buy"
        legs: tuple[tuple[OrderRole, OrderType], ...] = (("stop", "stop"), ("target", "limit"))
        for role, kind in legs:
            cid = b.child_id(role)
            child = self._orders.get(cid)
            if child is None:  # the gateway places it when the entry fills
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


def _num(text: str) -> int:
    return int(text) if text.isdigit() else 0
