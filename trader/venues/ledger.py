"""Positions and realised PnL rebuilt from order events alone (a pure fold).

`Ledger.apply` folds one event; `rebuild` folds a run. Per symbol it keeps the net
quantity (> 0 long, < 0 short), the average entry price and the entry commissions
not yet realised; a fill against the position realises
`(fill - average) x sign x point value x closed quantity - commissions`, where the
commissions are the closing fill's and the closed share of the entry fills'. With
one entry and one exit per trade (the paper venue) this is the arithmetic of the
trade outcome, so replaying a run's `orders` rebuilds its realised PnL exactly.
Working orders are tracked too (submitted or accepted, not yet done), which is
what reconciliation compares with the venue's after a restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from infra.contracts import (
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
)
from trader.venues.base import Position, WorkingOrder

__all__ = ["Holding", "Ledger", "LedgerError", "rebuild"]


#: Events after which an order works no more (unless it filled).
_DONE = frozenset({OrderRejected, OrderCancelled, OrderExpired})


class LedgerError(ValueError):
    """Raise when an order event names a symbol without a point value."""


@dataclass(slots=True)
class Holding:
    """One symbol's net position as the fold sees it."""

    quantity: int = 0
    avg_price: float = 0.0
    open_commission_usd: float = 0.0


@dataclass
class Ledger:
    """Positions, realised PnL, commissions and working orders from order events."""

    point_values: Mapping[str, float]
    holdings: dict[str, Holding] = field(default_factory=dict)
    realized_pnl_usd: dict[str, float] = field(default_factory=dict)
    commission_usd: dict[str, float] = field(default_factory=dict)
    working: dict[str, WorkingOrder] = field(default_factory=dict)
    track_working: bool = True  # False: positions and PnL only (cheaper)
    fills: int = 0

    def apply(self, event: Event) -> float | None:
        """Fold one event; return the PnL a fill realised (None when it realised nothing)."""
        kind = type(event)
        if kind is OrderFilled:
            return self._fill(event)  # type: ignore[arg-type]
        if not self.track_working:
            return None
        if kind is OrderSubmitted:
            self._submitted(event)  # type: ignore[arg-type]
        elif kind is OrderAccepted:
            self._accepted(event)  # type: ignore[arg-type]
        elif kind in _DONE:
            self.working.pop(event.client_order_id, None)  # type: ignore[attr-defined]
        return None

    def _submitted(self, event: OrderSubmitted) -> None:
        self.working[event.client_order_id] = WorkingOrder(
            client_order_id=event.client_order_id,
            symbol=event.symbol,
            role=event.role,
            side=event.side,
            quantity=event.quantity,
            order_type=event.order_type,
            limit_price=event.limit_price,
            stop_price=event.stop_price,
            parent_id=event.parent_id,
            venue_order_id=event.venue_order_id,
            contract=event.contract,
        )

    def _accepted(self, event: OrderAccepted) -> None:
        w = self.working.get(event.client_order_id)
        if w is not None and (
            w.quantity != event.quantity
            or w.limit_price != event.limit_price
            or w.stop_price != event.stop_price
            or (event.venue_order_id and w.venue_order_id != event.venue_order_id)
        ):
            self.working[event.client_order_id] = replace(
                w,
                quantity=event.quantity,
                limit_price=event.limit_price,
                stop_price=event.stop_price,
                venue_order_id=event.venue_order_id or w.venue_order_id,
            )

    def _fill(self, e: OrderFilled) -> float | None:
        pv = self.point_values.get(e.symbol)
        if pv is None:
            raise LedgerError(f"no point value for symbol {e.symbol!r} (fill {e.venue_fill_id})")
        self.fills += 1
        w = self.working.get(e.client_order_id)
        if w is not None:
            if e.leaves_quantity == 0 and e.cumulative_quantity >= w.quantity:
                del self.working[e.client_order_id]
            else:
                self.working[e.client_order_id] = replace(w, filled_quantity=e.cumulative_quantity)
        self.commission_usd[e.symbol] = self.commission_usd.get(e.symbol, 0.0) + e.commission_usd
        h = self.holdings.get(e.symbol)
        if h is None:
            h = self.holdings[e.symbol] = Holding()
        sign = 1 if e.side == "buy" else -1
        q, price, commission = e.quantity, e.fill_price, e.commission_usd
        if h.quantity == 0 or (h.quantity > 0) == (sign > 0):
            self._add(h, sign, q, price, commission)
            return None
        held = abs(h.quantity)
        closed = min(q, held)
        open_share = (
            h.open_commission_usd if closed == held else h.open_commission_usd * closed / held
        )
        fill_share = commission if closed == q else commission * closed / q
        side = 1 if h.quantity > 0 else -1
        pnl = (price - h.avg_price) * side * pv * closed - (open_share + fill_share)
        self.realized_pnl_usd[e.symbol] = self.realized_pnl_usd.get(e.symbol, 0.0) + pnl
        h.open_commission_usd -= open_share
        h.quantity += sign * closed
        if h.quantity == 0:
            h.avg_price, h.open_commission_usd = 0.0, 0.0
        if q > closed:  # the fill reversed the position: the rest opens the other side
            self._add(h, sign, q - closed, price, commission - fill_share)
        return pnl

    @staticmethod
    def _add(h: Holding, sign: int, q: int, price: float, commission: float) -> None:
        held = abs(h.quantity)
        h.avg_price = price if held == 0 else (h.avg_price * held + price * q) / (held + q)
        h.quantity += sign * q
        h.open_commission_usd += commission

    def positions(self) -> list[Position]:
        """Return the open positions (non-zero quantity), by symbol."""
        return [
            Position(symbol, h.quantity, h.avg_price)
            for symbol, h in sorted(self.holdings.items())
            if h.quantity != 0
        ]

    def total_realized_pnl_usd(self) -> float:
        """Return the realised PnL over every symbol."""
        return sum(self.realized_pnl_usd.values())


def rebuild(events: Iterable[Event], point_values: Mapping[str, float]) -> Ledger:
    """Fold a sequence of events (others than order events are ignored) into a ledger."""
    ledger = Ledger(point_values)
    for event in events:
        ledger.apply(event)
    return ledger
