"""The simulated gateway's order desk: TWS order messages in, paper venue fills out.

`OrderDesk` is the order half of `trader.venues.sims.ib.IbSimulator`: it keeps the
gateway's record of every IB order, turns brackets and closing market orders into
paper venue orders, and answers with `openOrder`, `orderStatus`, `execDetails`,
`commissionReport` and `position` messages as the paper venue fills and cancels.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import datetime

from infra.contracts import (
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    VenueEvent,
)
from trader.venues.base import BracketOrder, VenueError
from trader.venues.paper import PaperVenue
from trader.venues.sims import ib_wire as w

__all__ = ["ClientSession", "Execution", "OrderDesk", "SimOrder"]

WORKING = ("PreSubmitted", "Submitted")


@dataclass(slots=True)
class SimOrder:
    """The gateway's record of one order."""

    placed: w.PlacedOrder
    contract: w.IbContract
    client_id: int
    perm_id: int
    status: str = "Held"  # not transmitted yet
    filled: float = 0.0
    avg_price: float = 0.0
    cid: str = ""  # the paper venue's client order id
    children: list[int] = field(default_factory=list)

    @property
    def working(self) -> bool:
        """Say whether the order is live at the gateway."""
        return self.status in WORKING


@dataclass(frozen=True, slots=True)
class Execution:
    """One fill the gateway reported (kept for `reqExecutions`)."""

    order_id: int
    exec_id: str
    ts: datetime
    shares: float
    price: float
    cum_qty: float
    avg_price: float
    commission_usd: float


class ClientSession:
    """One API connection: its socket writer, client id and subscriptions."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.client_id = -1
        self.positions = False  # subscribed with reqPositions


class OrderDesk:
    """Orders at the simulated gateway (mixed into `IbSimulator`)."""

    account: str
    delay_ms: int
    cut_off: bool
    silent: bool
    withhold_commissions: bool
    paper: PaperVenue
    orders: dict[int, SimOrder]
    _by_cid: dict[str, int]
    _executions: list[Execution]
    _flatten_into: int | None
    _closers: set[int]
    _reject: list[str]
    _sessions: list[ClientSession]
    _next_id: int
    _perm: itertools.count[int]
    _listing: list[w.IbContract]

    def contract(self, symbol: str) -> w.IbContract:
        """Return the front contract the gateway lists for `symbol`."""
        return next(c for c in self._listing if c.symbol == symbol)

    def position(self, symbol: str) -> int:
        """Return the net position in `symbol`."""
        return sum(p.quantity for p in self.paper.positions() if p.symbol == symbol)

    def _send(self, session: ClientSession, fields: list[w.Field]) -> None:
        if self.silent:  # a hung gateway (`silence`)
            return
        data = w.frame(fields)
        if self.delay_ms > 0:
            asyncio.get_running_loop().call_later(self.delay_ms / 1000, _write, session, data)
        else:
            _write(session, data)

    def _to_owner(self, order: SimOrder, fields: list[w.Field]) -> None:
        if self.cut_off:  # the gateway lost its servers: nothing reaches the client
            return
        for s in self._sessions:
            if s.client_id == order.client_id:
                self._send(s, fields)

    # orders --------------------------------------------------------------

    def _place(self, s: ClientSession, p: w.PlacedOrder) -> None:
        self._next_id = max(self._next_id, p.order_id + 1)
        old = self.orders.get(p.order_id)
        if old is not None:
            self._modify(s, old, p)
            return
        contract = next(
            (
                c
                for c in self._listing
                if c.con_id == p.con_id or (not p.con_id and c.symbol == p.symbol)
            ),
            None,
        )
        if contract is None:
            self._send(s, w.encode_error(p.order_id, 200, "No security definition has been found"))
            return
        o = SimOrder(p, contract, s.client_id, next(self._perm))
        self.orders[p.order_id] = o
        parent = self.orders.get(p.parent_id) if p.parent_id else None
        if parent is not None:
            parent.children.append(p.order_id)
        if not p.transmit:
            return
        if parent is not None:
            self._bracket(parent)
        elif p.order_type == "MKT" and self._closes(o):
            self._close_position(o)
        else:
            o.status = "Cancelled"
            self._to_owner(
                o,
                w.encode_error(
                    p.order_id,
                    201,
                    "Order rejected - reason: "
                    "the simulator takes brackets and closing market orders",
                ),
            )

    def _bracket(self, parent: SimOrder) -> None:
        kids = [self.orders[i] for i in parent.children]
        stop = next((k for k in kids if k.placed.order_type == "STP"), None)
        target = next((k for k in kids if k.placed.order_type == "LMT"), None)
        group = [parent, *kids]
        if self._reject or stop is None or target is None or len(kids) != 2:
            why = (
                self._reject.pop(0) if self._reject else "a bracket needs one STP and one LMT child"
            )
            self._refuse(group, why)
            return
        p = parent.placed
        last = self.paper._last.get(p.symbol)
        ref = p.limit_price if p.order_type == "LMT" else (last.close if last else None)
        if ref is None:
            ref = ((stop.placed.aux_price or 0.0) + (target.placed.limit_price or 0.0)) / 2
        try:
            bracket = BracketOrder(
                client_order_id=p.order_ref,
                symbol=p.symbol,
                side="buy" if p.action == "BUY" else "sell",
                quantity=int(p.quantity),
                stop_distance=abs(ref - (stop.placed.aux_price or 0.0)),
                target_distance=abs((target.placed.limit_price or 0.0) - ref),
                entry_type="limit" if p.order_type == "LMT" else "market",
                limit_price=p.limit_price,
                contract=parent.contract.local_symbol,
            )
        except VenueError as exc:
            self._refuse(group, str(exc))
            return
        parent.cid = bracket.client_order_id
        stop.cid, target.cid = bracket.child_id("stop"), bracket.child_id("target")
        for o in group:
            self._by_cid[o.cid] = o.placed.order_id
        for k in kids:
            k.status = "PreSubmitted"
        try:
            self.paper.submit_bracket(bracket)
        except VenueError as exc:
            self._refuse(group, str(exc))
            return
        if parent.working:
            for k in kids:
                self._report(k)

    def _refuse(self, group: list[SimOrder], why: str) -> None:
        for o in group:
            o.status = "Cancelled"
            self._to_owner(
                o, w.encode_error(o.placed.order_id, 201, f"Order rejected - reason:{why}")
            )

    def _closes(self, o: SimOrder) -> bool:
        sign = 1 if o.placed.action == "BUY" else -1
        return self.position(o.placed.symbol) == -sign * int(o.placed.quantity) != 0

    def _close_position(self, o: SimOrder) -> None:
        o.status = "Submitted"
        self._closers.add(o.placed.order_id)
        self._report(o)
        self._flatten_into = o.placed.order_id
        try:
            self.paper.flatten(o.placed.symbol, reason=f"order {o.placed.order_id}")
        finally:
            self._flatten_into = None

    def _modify(self, s: ClientSession, o: SimOrder, p: w.PlacedOrder) -> None:
        if not o.working:
            self._send(s, w.encode_error(p.order_id, 103, "Duplicate order id"))
            return
        o.placed = p
        if o.cid in self.paper._orders:
            try:
                self._sync_prices(o)
                if (
                    o.placed.parent_id == 0
                    and int(p.quantity) != self.paper._orders[o.cid].quantity
                ):
                    self.paper.modify(o.cid, quantity=int(p.quantity))
            except VenueError as exc:
                self._send(s, w.encode_error(p.order_id, 105, f"Order modify failed: {exc}"))
                return
        self._report(o)

    def _sync_prices(self, o: SimOrder) -> None:
        """Keep the paper order at the absolute price IB works (children are not re-anchored)."""
        po = self.paper._orders.get(o.cid)
        if po is None:
            return
        p = o.placed
        if p.order_type == "STP" and p.aux_price and po.stop_price != p.aux_price:
            self.paper.modify(o.cid, stop_price=p.aux_price)
        elif p.order_type == "LMT" and p.limit_price and po.limit_price != p.limit_price:
            self.paper.modify(o.cid, limit_price=p.limit_price)

    def _cancel(self, s: ClientSession, order_id: int) -> None:
        o = self.orders.get(order_id)
        if o is None or not o.working:
            self._send(
                s,
                w.encode_error(
                    order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found."
                ),
            )
            return
        if o.cid in self.paper._orders:
            self.paper.cancel(o.cid)  # the paper venue's events report it
        else:
            self._cancelled(o)
        if o.placed.parent_id == 0:
            for k in o.children:
                kid = self.orders[k]
                if kid.working and kid.cid not in self.paper._orders:
                    self._cancelled(kid)

    def _cancelled(self, o: SimOrder) -> None:
        o.status = "Cancelled"
        self._status(o, 0.0)

    # the paper venue's events -> TWS messages ------------------------------

    def _on_paper(self, e: VenueEvent) -> None:
        if isinstance(e, OrderSubmitted):
            if e.role == "flatten" and self._flatten_into is not None:
                self._by_cid[e.client_order_id] = self._flatten_into
            return
        order_id = self._by_cid.get(getattr(e, "client_order_id", ""))
        if order_id is None:
            return
        o = self.orders[order_id]
        if isinstance(e, OrderAccepted):
            if o.placed.parent_id and o.status == "Cancelled":  # cancelled before its parent filled
                self.paper.cancel(o.cid)
                return
            if o.placed.order_type in ("STP", "LMT") and o.placed.parent_id:
                self._sync_prices(o)
            if o.status in ("Held", "PreSubmitted"):
                o.status = "Submitted"
                self._report(o)
        elif isinstance(e, OrderFilled):
            self._filled(o, e)
        elif isinstance(e, OrderRejected):
            group = [o, *(self.orders[k] for k in o.children)]
            self._refuse(group, e.reason)
        elif (
            isinstance(e, OrderCancelled | OrderExpired)
            and o.working
            and o.placed.order_id not in self._closers
        ):
            self._cancelled(o)

    def _filled(self, o: SimOrder, e: OrderFilled) -> None:
        total = o.filled + e.quantity
        o.avg_price = (o.avg_price * o.filled + e.fill_price * e.quantity) / total
        o.filled = total
        if o.filled >= o.placed.quantity:
            o.status = "Filled"
        ex = Execution(
            o.placed.order_id,
            f"0000e0d5.{o.perm_id:08x}.{len(self._executions) + 1:02d}.01",
            e.ts_event,
            float(e.quantity),
            e.fill_price,
            o.filled,
            o.avg_price,
            e.commission_usd,
        )
        self._executions.append(ex)
        self._to_owner(o, self._exec_fields(-1, o, ex))
        self._status(o, e.fill_price)
        update = self._position_fields(o.placed.symbol)
        for session in self._sessions:
            if session.positions and not self.cut_off:
                self._send(session, update)
        if not self.withhold_commissions:
            self._to_owner(o, w.encode_commission_report(ex.exec_id, ex.commission_usd, 0.0))

    def _position_fields(self, symbol: str) -> list[w.Field]:
        c = self.contract(symbol)
        held = [p for p in self.paper.positions() if p.symbol == symbol]
        qty = held[0].quantity if held else 0
        cost = held[0].avg_price * float(c.multiplier) if held else 0.0
        return w.encode_position(self.account, c, qty, cost)

    def _exec_fields(self, req_id: int, o: SimOrder, e: Execution) -> list[w.Field]:
        return w.encode_exec_details(
            req_id,
            o.placed.order_id,
            o.contract,
            exec_id=e.exec_id,
            ts=e.ts,
            account=self.account,
            side="BOT" if o.placed.action == "BUY" else "SLD",
            shares=e.shares,
            price=e.price,
            perm_id=o.perm_id,
            client_id=o.client_id,
            cum_qty=e.cum_qty,
            avg_price=e.avg_price,
            order_ref=o.placed.order_ref,
        )

    def _report(self, o: SimOrder, session: ClientSession | None = None) -> None:
        """Send `openOrder` and `orderStatus` (to `session`, else to the order's owner)."""
        msgs = [
            w.encode_open_order(
                o.placed, o.contract, perm_id=o.perm_id, client_id=o.client_id, status=o.status
            ),
            self._status_fields(o, 0.0),
        ]
        for m in msgs:
            if session is not None:
                self._send(session, m)
            else:
                self._to_owner(o, m)

    def _status(self, o: SimOrder, last_price: float) -> None:
        self._to_owner(o, self._status_fields(o, last_price))

    def _status_fields(self, o: SimOrder, last_price: float) -> list[w.Field]:
        return w.encode_order_status(
            o.placed.order_id,
            o.status,
            o.filled,
            o.placed.quantity - o.filled,
            o.avg_price,
            o.perm_id,
            o.placed.parent_id,
            last_price,
            o.client_id,
        )


def _write(session: ClientSession, data: bytes) -> None:
    if not session.writer.is_closing():
        session.writer.write(data)
