"""The `paper` venue: the bar-level fill model (`trader.venues.fills`) behind the venue interface.

Used by paper trading and backtests alike. Orders fill by the rules of
`PaperBroker` (market entries at the next bar's open plus slippage; stop and target
re-anchored at the fill, the stop winning a bar that touches both; session end,
timeout and shutdown at market) and every step is published as an order event:

- `submit_bracket`: `OrderSubmitted` + `OrderAccepted` for the entry (an unknown
  symbol or a quantity above `max_order_quantity` is `OrderRejected`);
- the entry's fill: `OrderFilled`, then the stop and target children
  (`OrderSubmitted` + `OrderAccepted`, one OCO group, at prices from the fill);
- the exit: `OrderFilled` of the stop or target and `OrderCancelled` (`oco`) of
  the other; a session end, timeout or shutdown submits, accepts and fills a
  `flatten` market order and cancels both children.

Limit entries fill on the first bar whose range reaches the limit, at the open when
it gaps through, else at the limit (no slippage); working limit entries expire at
the session end (`OrderExpired`). With `max_fill_per_bar` an entry fills at most that
many contracts per bar (partial fills, at each bar's open); its children are placed
once it is complete, at distances from the average price.

`disconnect()` simulates a dropped session: the simulated exchange keeps working
the orders, requests raise `VenueDisconnected`, and the events that happened
meanwhile are delivered on `connect()`, in order.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from infra.contracts import (
    OrderRejected,
    OrderSide,
    VenueEvent,
)
from infra.settings import Settings
from trader.core.bar import MarketBar
from trader.core.instruments import Instrument
from trader.venues.base import (
    BracketOrder,
    ConnectionState,
    DuplicateClientOrderId,
    InvalidOrder,
    Position,
    SessionState,
    UnknownOrder,
    Venue,
    VenueDisconnected,
    WorkingOrder,
)
from trader.venues.fills import Closed, PaperBroker
from trader.venues.fills import Position as FillPosition
from trader.venues.paper_book import PaperOrder, PaperVenueSettings, PendingEntry
from trader.venues.paper_restore import PaperRestore

__all__ = ["PaperVenue", "PaperVenueSettings"]


class PaperVenue(PaperRestore, Venue):
    """The bar-level fill model as a venue; starts connected (its session is in-process)."""

    name = "paper"

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        config: PaperVenueSettings | None = None,
        *,
        contracts: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.config = config or PaperVenueSettings()
        self.instruments = dict(instruments)
        self.contracts = dict(contracts or {})
        self.book = PaperBroker(
            self.instruments,
            slippage_ticks=self.config.slippage_ticks,
            commission_per_contract_usd=self.config.commission_per_contract_usd,
            flatten=self.config.flatten_at_session_end,
            max_hold_bars=self.config.max_hold_bars,
            record_fills=True,
        )
        self._orders: dict[str, PaperOrder] = {}  # working orders by client order id
        self._used: set[str] = set()
        self._entries: dict[str, list[PendingEntry]] = {}  # symbol -> limit / capped entries
        self._positions: dict[str, FillPosition] = {}  # entry id -> position in the book
        self._held: list[VenueEvent] = []
        self._last: dict[str, MarketBar] = {}
        self._clock: dict[str, tuple[int, datetime]] = {}
        self._busy: set[str] = set()  # symbols with working entries or positions
        self.watching = self._busy  # bars of other symbols change nothing here
        self._ids = itertools.count(1)
        self._set_state(ConnectionState.CONNECTED)

    @classmethod
    def from_settings(
        cls, settings: Settings, instruments: Mapping[str, Instrument], **overrides: Any
    ) -> PaperVenue:
        """Return a paper venue configured from the process settings."""
        return cls(instruments, PaperVenueSettings.from_settings(settings, **overrides))

    # connection ---------------------------------------------------------

    async def connect(self) -> None:
        """Re-open the session and deliver the events that happened while it was down."""
        self._set_state(ConnectionState.CONNECTED)
        held, self._held = self._held, []
        for event in held:
            self._publish(event)

    async def disconnect(self) -> None:
        """Drop the session; the simulated exchange keeps working the orders."""
        self._set_state(ConnectionState.DISCONNECTED)

    def _require_session(self) -> None:
        if self._state is not ConnectionState.CONNECTED:
            raise VenueDisconnected(f"venue {self.name!r} is {self._state.value}")

    # events -------------------------------------------------------------

    # orders -------------------------------------------------------------

    def submit_bracket(self, order: BracketOrder) -> None:
        """Accept (or reject) a bracket; its entry fills on the next bar."""
        self._require_session()
        ids = (order.client_order_id, *(order.child_id(r) for r in ("stop", "target", "flatten")))
        for cid in ids:
            if cid in self._used:
                raise DuplicateClientOrderId(f"client order id {cid!r} was already used")
        o = self._new_order(
            order,
            order.client_order_id,
            "entry",
            order.side,
            order.quantity,
            order.entry_type,
            limit_price=order.limit_price,
        )
        self._submitted(o)
        inst = self.instruments.get(order.symbol)
        if inst is None or order.quantity > self.config.max_order_quantity:
            why = (
                f"unknown symbol {order.symbol!r}"
                if inst is None
                else f"quantity {order.quantity} above {self.config.max_order_quantity}"
            )
            self._emit(OrderRejected(**self._common(o), reason=why))
            return
        self._orders[o.client_order_id] = o
        self._busy.add(order.symbol)
        self._accepted(o)
        cap = self.config.max_fill_per_bar
        if order.entry_type == "market" and (cap is None or order.quantity <= cap):
            p = FillPosition(
                o,
                order.symbol,
                order.strategy,
                order.sign,
                order.quantity,
                order.stop_distance,
                order.target_distance,
                counterfactual=False,
            )
            self._positions[o.client_order_id] = p
            self.book.place(p)
        else:
            self._entries.setdefault(order.symbol, []).append(PendingEntry(o))

    def modify(
        self,
        client_order_id: str,
        *,
        quantity: int | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
    ) -> None:
        """Change a working order's quantity (entries) or price; answer with `OrderAccepted`."""
        self._require_session()
        o = self._working(client_order_id)
        if quantity is not None:
            if o.role != "entry" or quantity < max(1, o.filled):
                raise InvalidOrder(f"cannot set the quantity of {client_order_id!r} to {quantity}")
            o.quantity = quantity
            p = self._positions.get(client_order_id)
            if p is not None:
                p.quantity = quantity
        if limit_price is not None:
            if o.order_type != "limit" or limit_price <= 0:
                raise InvalidOrder(f"{client_order_id!r} takes no limit price {limit_price}")
            o.limit_price = limit_price
            if o.role == "target":
                self._positions[o.parent_id].target = limit_price
        if stop_price is not None:
            if o.order_type != "stop" or stop_price <= 0:
                raise InvalidOrder(f"{client_order_id!r} takes no stop price {stop_price}")
            o.stop_price = stop_price
            self._positions[o.parent_id].stop = stop_price
        self._accepted(o)

    def _working(self, client_order_id: str) -> PaperOrder:
        o = self._orders.get(client_order_id)
        if o is None:
            raise UnknownOrder(f"no working order {client_order_id!r}")
        return o

    def cancel(self, client_order_id: str) -> None:
        """Cancel a working order; a child's cancellation leaves the position unprotected."""
        self._require_session()
        self._cancel(self._working(client_order_id), "requested")

    def _cancel(self, o: PaperOrder, reason: str, expired: bool = False) -> None:
        if o.role == "entry":
            p = self._positions.pop(o.client_order_id, None)
            if p is not None:
                self.book.pending[o.symbol].remove(p)
            entries = self._entries.get(o.symbol, [])
            entries[:] = [e for e in entries if e.order is not o]
        else:
            p = self._positions[o.parent_id]
            if o.role == "stop":
                p.stop = -p.side * math.inf
            elif o.role == "target":
                p.target = p.side * math.inf
        self._done(o, reason, expired)

    def cancel_all(self, symbol: str | None = None) -> None:
        """Cancel every working order (of one symbol)."""
        self._require_session()
        for o in list(self._orders.values()):
            if symbol is None or o.symbol == symbol:
                self._cancel(o, "cancel_all")

    def flatten(self, symbol: str | None = None, reason: str = "requested") -> None:
        """Cancel working entries and exit open positions at the last close less slippage."""
        self._require_session()
        self._flatten(symbol, reason)

    def _flatten(self, symbol: str | None, reason: str) -> None:
        for o in list(self._orders.values()):
            if o.role == "entry" and (symbol is None or o.symbol == symbol):
                self._cancel(o, reason)
        for sym, held in self.book.open.items():
            bar = self._last.get(sym)
            if (symbol is not None and sym != symbol) or bar is None or not held:
                continue
            inst = self.instruments[sym]
            slip = self.config.slippage_ticks * inst.tick_size
            closed = [
                self.book._close(p, bar.ts_s, bar.close - p.side * slip, reason, inst) for p in held
            ]
            held.clear()
            for c in closed:
                self._exit(c)

    def positions(self) -> list[Position]:
        """Return the net position per symbol (filled entries, also partly filled ones)."""
        out: list[Position] = []
        for symbol in self.instruments:
            qty, cost = 0, 0.0
            for p in self.book.open.get(symbol, ()):
                qty += p.side * p.quantity
                cost += p.entry_price * p.quantity
            for e in self._entries.get(symbol, ()):
                if e.order.filled:
                    qty += e.order.bracket.sign * e.order.filled
                    cost += e.avg_price * e.order.filled
            if qty:
                held = sum(p.quantity for p in self.book.open.get(symbol, ())) + sum(
                    e.order.filled for e in self._entries.get(symbol, ())
                )
                out.append(Position(symbol, qty, cost / held, self.contracts.get(symbol, "")))
        return out

    def working_orders(self) -> list[WorkingOrder]:
        """Return the working orders in submission order."""
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
                venue_order_id=o.venue_order_id,
                contract=self.contracts.get(o.symbol, ""),
            )
            for o in self._orders.values()
        ]

    # the market ---------------------------------------------------------

    def on_bar(self, bar: MarketBar, session: SessionState) -> None:
        """Fill and exit by this bar; publish what happened."""
        symbol = bar.symbol
        self._last[symbol] = bar
        if symbol in self._busy:
            self._work(bar, session.minutes_to_close, session.in_rth)

    def _work(self, bar: MarketBar, minutes_to_close: int, in_rth: bool) -> None:
        symbol = bar.symbol
        book = self.book
        entries = self._entries.get(symbol)
        if entries:
            self._fill_entries(bar, entries, minutes_to_close, in_rth)
        if book.open[symbol] or book.pending[symbol]:
            closed = book.on_bar(bar, minutes_to_close, in_rth)
            if book.filled:
                for p in book.filled:
                    o: PaperOrder = p.signal
                    self._positions[o.client_order_id] = p
                    self._filled(o, p.entry_price, p.quantity)
                    self._children(o, p)
                book.filled.clear()
            for c in closed:
                self._exit(c)
        if not (book.open[symbol] or book.pending[symbol] or self._entries.get(symbol)):
            self._busy.discard(symbol)

    def _fill_entries(
        self, bar: MarketBar, entries: list[PendingEntry], minutes_to_close: int, in_rth: bool
    ) -> None:
        inst = self.instruments[bar.symbol]
        slip = self.config.slippage_ticks * inst.tick_size
        cap = self.config.max_fill_per_bar
        for e in list(entries):
            o = e.order
            sign = o.bracket.sign
            if o.order_type == "limit":
                limit = o.limit_price or 0.0
                if (bar.low > limit) if sign > 0 else (bar.high < limit):
                    if self.config.flatten_at_session_end and in_rth and minutes_to_close <= 0:
                        entries.remove(e)
                        self._done(o, "day order at the session end", expired=True)
                    continue
                price = min(bar.open, limit) if sign > 0 else max(bar.open, limit)
            else:
                price = bar.open + sign * slip
            q = min(o.quantity - o.filled, cap or o.quantity)
            e.avg_price = (e.avg_price * o.filled + price * q) / (o.filled + q)
            if o.filled == 0:
                e.avg_price = price
            e.commission += self._filled(o, price, q)
            if o.filled < o.quantity:
                continue
            entries.remove(e)
            b = o.bracket
            p = FillPosition(
                o,
                b.symbol,
                b.strategy,
                sign,
                o.quantity,
                b.stop_distance,
                b.target_distance,
                counterfactual=False,
            )
            p.entry_price, p.entry_ts_s = e.avg_price, bar.ts_s
            p.stop = e.avg_price - sign * b.stop_distance
            p.target = e.avg_price + sign * b.target_distance
            self.book.open.setdefault(b.symbol, []).append(p)
            self._positions[o.client_order_id] = p
            self._children(o, p)

    def _children(self, entry: PaperOrder, p: FillPosition) -> None:
        b = entry.bracket
        exit_side: OrderSide = "sell" if b.sign > 0 else "buy"
        stop = self._new_order(
            b, b.child_id("stop"), "stop", exit_side, p.quantity, "stop", stop_price=p.stop
        )
        target = self._new_order(
            b, b.child_id("target"), "target", exit_side, p.quantity, "limit", limit_price=p.target
        )
        for child in (stop, target):
            self._orders[child.client_order_id] = child
            self._submitted(child)
            self._accepted(child)

    def _exit(self, c: Closed) -> None:
        entry: PaperOrder = c.position.signal
        b = entry.bracket
        self._positions.pop(b.client_order_id, None)
        stop = self._orders.get(b.child_id("stop"))
        target = self._orders.get(b.child_id("target"))
        if c.exit_reason in ("stop", "target"):
            filled, other = (stop, target) if c.exit_reason == "stop" else (target, stop)
            if filled is not None:
                self._filled(filled, c.exit_price, filled.quantity - filled.filled)
            if other is not None:
                self._done(other, "oco")
            return
        for child in (stop, target):
            if child is not None:
                self._done(child, c.exit_reason)
        exit_side: OrderSide = "sell" if b.sign > 0 else "buy"
        qty = c.position.quantity
        flat = self._new_order(b, b.child_id("flatten"), "flatten", exit_side, qty, "market")
        self._orders[flat.client_order_id] = flat
        self._submitted(flat, reason=c.exit_reason)
        self._accepted(flat)
        self._filled(flat, c.exit_price, qty)
