"""A local Interactive Brokers gateway: the TWS API socket protocol over the paper fill model.

Clients (`ib_async`) connect over loopback exactly as to TWS or IB Gateway; the
wire format lives in `trader.venues.sims.ib_wire`. Orders are matched by the paper
venue (`trader.venues.paper.PaperVenue`) on the bars given to `on_bar`:
a bracket (parent with `transmit` off, a stop and a limit child sharing an OCA
group, the last child transmitting) becomes one paper bracket; a market order that
closes a position becomes the paper venue's flatten. IB keeps the children at the
absolute prices sent; the simulator does too. Order state, executions and
positions live in the simulator, so they survive client disconnects and gateway
restarts.

Fault switches: `reject_next`, `partial_fills`, `delay_ms` (slow answers),
`drop_clients` (disconnect) and `restart_gateway` (the nightly restart).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from features.rolls import QUARTERLY_ROOTS, contract_code, expiry, front_month
from infra.contracts import (
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    VenueEvent,
)
from trader.core.bar import MarketBar
from trader.core.instruments import Instrument
from trader.venues.base import BracketOrder, SessionState, VenueError, child_order_id
from trader.venues.paper import PaperVenue, PaperVenueSettings
from trader.venues.sims import ib_wire as w

__all__ = ["IbSimulator", "SimOrder"]

log = logging.getLogger(__name__)

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
class _Execution:
    order_id: int
    exec_id: str
    ts: datetime
    shares: float
    price: float
    cum_qty: float
    avg_price: float
    commission_usd: float


class _Session:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.client_id = -1
        self.positions = False  # subscribed with reqPositions


class IbSimulator:
    """A TWS API server on loopback, matching orders with the paper fill model."""

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        *,
        account: str = "DU0000001",
        host: str = "127.0.0.1",
        port: int = 0,
        slippage_ticks: float = 1.0,
        commission_per_contract_usd: float = 2.25,
        today: date | None = None,
    ) -> None:
        self.account = account
        self.host = host
        self.port = port
        self.delay_ms = 0
        self._reject: list[str] = []
        self._listing = _listing(instruments, today or datetime.now(UTC).date())
        self.paper = PaperVenue(
            instruments,
            PaperVenueSettings(
                slippage_ticks=slippage_ticks,
                commission_per_contract_usd=commission_per_contract_usd,
                flatten_at_session_end=False,
                max_hold_bars=1 << 30,
            ),
        )
        self.paper.add_listener(self._on_paper)
        self.orders: dict[int, SimOrder] = {}
        self._by_cid: dict[str, int] = {}
        self._executions: list[_Execution] = []
        self._flatten_into: int | None = None
        self._closers: set[int] = set()  # market orders that close positions
        self._next_id = 1
        self._perm = itertools.count(1_000_001)
        self._sessions: list[_Session] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: symbol -> (session, request id) of each `reqRealTimeBars` subscription
        self.bar_subscribers: dict[str, list[tuple[_Session, int]]] = {}
        self.connections = 0  # accepted handshakes since start

    # server --------------------------------------------------------------

    async def start(self) -> None:
        """Listen on `host:port` (port 0 picks a free one, kept across restarts)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close every session and stop listening."""
        self.drop_clients()
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def drop_clients(self) -> None:
        """Close every client connection (orders keep working)."""
        for s in list(self._sessions):
            s.writer.close()
        self._sessions.clear()

    async def restart_gateway(self, down_s: float = 0.5) -> None:
        """Stop the gateway, stay down `down_s` seconds (refusing connections), start again."""
        await self.stop()
        await asyncio.sleep(down_s)  # the gateway's downtime, not a synchronisation
        await self.start()

    @property
    def listening(self) -> bool:
        """Say whether the gateway accepts connections."""
        return self._server is not None

    # fault switches ------------------------------------------------------

    def reject_next(self, reason: str = "simulated rejection") -> None:
        """Reject the next transmitted order (a bracket's parent) with `reason`."""
        self._reject.append(reason)

    def partial_fills(self, max_per_bar: int | None) -> None:
        """Fill entries at most `max_per_bar` contracts per bar (None: all at once)."""
        self.paper.config = self.paper.config.model_copy(update={"max_fill_per_bar": max_per_bar})

    # the market ----------------------------------------------------------

    def on_bar(self, bar: MarketBar, session: SessionState) -> None:
        """Match working orders against one bar."""
        self.paper.on_bar(bar, session)

    def publish_bar(self, bar: MarketBar) -> None:
        """Stream a 1-minute bar to its subscribers as the twelve 5-second real-time bars."""
        start = bar.ts_s - 60
        for fields in w.realtime_bars(start, bar.open, bar.high, bar.low, bar.close, bar.volume):
            self.publish_realtime(bar.symbol, fields)

    def publish_realtime(self, symbol: str, fields: list[w.Field]) -> None:
        """Stream one 5-second bar (time, open, high, low, close, volume, wap, count) as given.

        Nothing is checked: a fault switch for bad vendor data as well.
        """
        subs = self.bar_subscribers.get(symbol, [])
        subs[:] = [(s, r) for s, r in subs if s in self._sessions]
        for session, req_id in subs:
            self._send(session, [50, 3, req_id, *fields])

    def contract(self, symbol: str) -> w.IbContract:
        """Return the front contract the gateway lists for `symbol`."""
        return next(c for c in self._listing if c.symbol == symbol)

    def position(self, symbol: str) -> int:
        """Return the net position in `symbol`."""
        return sum(p.quantity for p in self.paper.positions() if p.symbol == symbol)

    # sessions ------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            if await reader.readexactly(4) != b"API\0":
                raise w.ProtocolError("the client did not open with API\\0")
            buf = bytearray()
            while not (greeting := w.split_frames(buf)):
                buf += await reader.read(4096) or b""
                if reader.at_eof():
                    return
            if not greeting[0] or not greeting[0][0].startswith("v"):
                raise w.ProtocolError(f"bad version range {greeting[0]!r}")
            writer.write(w.handshake_answer(datetime.now(UTC)))
            self._sessions.append(session)
            self.connections += 1
            for fields in greeting[1:]:
                self._handle(session, fields)
            while chunk := await reader.read(65536):
                buf += chunk
                for fields in w.split_frames(buf):
                    self._handle(session, fields)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except w.ProtocolError as exc:
            log.warning("ib sim: closing a client: %s", exc)
        finally:
            if session in self._sessions:
                self._sessions.remove(session)
            for subs in self.bar_subscribers.values():
                subs[:] = [(s, r) for s, r in subs if s is not session]
            writer.close()

    def _send(self, session: _Session, fields: list[w.Field]) -> None:
        data = w.frame(fields)
        if self.delay_ms > 0:
            asyncio.get_running_loop().call_later(self.delay_ms / 1000, _write, session, data)
        else:
            _write(session, data)

    def _to_owner(self, order: SimOrder, fields: list[w.Field]) -> None:
        for s in self._sessions:
            if s.client_id == order.client_id:
                self._send(s, fields)

    def _handle(self, s: _Session, f: list[str]) -> None:
        try:
            msg = int(f[0])
        except (IndexError, ValueError):
            raise w.ProtocolError(f"message without an id: {f[:3]!r}") from None
        if msg == w.START_API:
            self._start_api(s, int(f[2]))
        elif msg == w.PLACE_ORDER:
            self._place(s, w.PlacedOrder.parse(f))
        elif msg == w.CANCEL_ORDER:
            self._cancel(s, int(f[2]))
        elif msg == w.REQ_GLOBAL_CANCEL:
            for o in list(self.orders.values()):
                if o.working and o.placed.parent_id == 0:
                    self._cancel(s, o.placed.order_id)
        elif msg == w.REQ_POSITIONS:
            s.positions = True
            for p in self.paper.positions():
                self._send(s, self._position_fields(p.symbol))
            self._send(s, [62, 1])
        elif msg == w.REQ_OPEN_ORDERS:
            for o in self.orders.values():
                if o.working and o.client_id == s.client_id:
                    self._report(o, s)
            self._send(s, [53, 1])
        elif msg == w.REQ_COMPLETED_ORDERS:
            self._send(s, [102])
        elif msg == w.REQ_EXECUTIONS:
            self._executions_for(s, int(f[2]))
        elif msg == w.REQ_ACCOUNT_UPDATES:
            for key, value in (("NetLiquidation", "100000"), ("AvailableFunds", "100000")):
                self._send(s, [6, 2, key, value, "USD", self.account])
            self._send(s, [54, 1, self.account])
        elif msg == w.REQ_ACCOUNT_UPDATES_MULTI:
            self._send(s, [74, 1, int(f[2])])
        elif msg == w.REQ_CONTRACT_DETAILS:
            self._contract_details(s, f)
        elif msg == w.REQ_CURRENT_TIME:
            self._send(s, [49, 1, int(time.time())])
        elif msg == w.REQ_IDS:
            self._send(s, [9, 1, self._next_id])
        elif msg == w.REQ_REAL_TIME_BARS:
            self.bar_subscribers.setdefault(f[4], []).append((s, int(f[2])))
        elif msg == w.REQ_AUTO_OPEN_ORDERS:
            pass
        else:
            log.info("ib sim: message %s is not simulated", msg)

    def _start_api(self, s: _Session, client_id: int) -> None:
        if any(o is not s and o.client_id == client_id for o in self._sessions):
            self._send(s, w.encode_error(-1, 326, f"client id {client_id} is already in use"))
            s.writer.close()
            return
        s.client_id = client_id
        self._send(s, [9, 1, self._next_id])
        self._send(s, [15, 1, self.account])

    def _contract_details(self, s: _Session, f: list[str]) -> None:
        req_id, con_id, symbol, month = int(f[2]), int(f[3] or 0), f[4], f[6]
        local = f[13] if len(f) > 13 else ""
        found = [
            c
            for c in self._listing
            if (con_id and c.con_id == con_id)
            or (
                not con_id
                and c.symbol == symbol
                and (not month or c.last_trade_date.startswith(month))
                and (not local or c.local_symbol == local)
            )
        ]
        if not month and not local and not con_id:
            found = found[:1] if len(found) == 1 else found
        for c in found:
            self._send(s, w.encode_contract_details(req_id, c))
        if not found:
            self._send(s, w.encode_error(req_id, 200, "No security definition has been found"))
        self._send(s, [52, 1, req_id])

    def _executions_for(self, s: _Session, req_id: int) -> None:
        for e in self._executions:
            o = self.orders[e.order_id]
            if o.client_id != s.client_id:
                continue
            self._send(s, self._exec_fields(req_id, o, e))
            self._send(s, w.encode_commission_report(e.exec_id, e.commission_usd, 0.0))
        self._send(s, [55, 1, req_id])

    # orders --------------------------------------------------------------

    def _place(self, s: _Session, p: w.PlacedOrder) -> None:
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

    def _modify(self, s: _Session, o: SimOrder, p: w.PlacedOrder) -> None:
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

    def _cancel(self, s: _Session, order_id: int) -> None:
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
        ex = _Execution(
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
            if session.positions:
                self._send(session, update)
        self._to_owner(o, w.encode_commission_report(ex.exec_id, ex.commission_usd, 0.0))

    def _position_fields(self, symbol: str) -> list[w.Field]:
        c = self.contract(symbol)
        held = [p for p in self.paper.positions() if p.symbol == symbol]
        qty = held[0].quantity if held else 0
        cost = held[0].avg_price * float(c.multiplier) if held else 0.0
        return w.encode_position(self.account, c, qty, cost)

    def _exec_fields(self, req_id: int, o: SimOrder, e: _Execution) -> list[w.Field]:
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

    def _report(self, o: SimOrder, session: _Session | None = None) -> None:
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


def _write(session: _Session, data: bytes) -> None:
    if not session.writer.is_closing():
        session.writer.write(data)


def _listing(instruments: Mapping[str, Instrument], today: date) -> list[w.IbContract]:
    """Return the front quarterly contract of every CME root among `instruments`."""
    out: list[w.IbContract] = []
    for symbol, inst in instruments.items():
        if symbol not in QUARTERLY_ROOTS:
            continue
        year, month = front_month(today)
        last = expiry(year, month)
        out.append(
            w.IbContract(
                con_id=zlib.crc32(f"{symbol}{year}{month}".encode()) % 900_000_000 + 100_000_000,
                symbol=symbol,
                month=f"{year}{month:02d}",
                last_trade_date=last.strftime("%Y%m%d"),
                local_symbol=contract_code(symbol, year, month),
                multiplier=f"{inst.point_value_usd:g}",
                min_tick=inst.tick_size,
            )
        )
    return out


def child_ids(entry_id: str) -> tuple[str, str]:
    """Return the stop and target ids of a bracket entry (the adapter names children so)."""
    return child_order_id(entry_id, "stop"), child_order_id(entry_id, "target")
