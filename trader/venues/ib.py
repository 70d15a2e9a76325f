"""The `ib` venue: Interactive Brokers (TWS or IB Gateway) through `ib_async`.

- Contracts: the CME front month of each symbol from the roll calendar
  (`features.rolls`), qualified at connect (`Future(symbol, YYYYMM, "CME")`).
- A bracket is three IB orders: the entry (parent, `transmit` off), a stop and a
  limit child (`parentId`, one `ocaGroup`), the last child transmitting all three.
  Children are sent at distances from the last bar's close (the limit price for
  limit entries) and moved to distances from the average fill price once the entry
  is complete; their `OrderSubmitted`/`OrderAccepted` follow the entry's fill, as
  on the paper venue. `orderRef` carries the client order id.
- Executions with their commission reports become `OrderFilled`; `orderStatus`
  `Cancelled` becomes `OrderCancelled` (`oco` when the sibling filled), or
  `OrderRejected` when the gateway refused the order (error 201).
- `flatten`: cancel the symbol's working orders, then a market order against the
  net position (role `flatten`).
- Disconnects (the gateway's nightly restart included), and a connection that
  stays open with nothing received for `IB_SILENCE_TIMEOUT_S` (`ib_watch`), move
  the state to `CONNECTING` and reconnect with backoff; once back, executions
  missed meanwhile are published and orders the gateway no longer works are
  closed, then the state is `CONNECTED` again and the trading process reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ib_async import IB, Future, LimitOrder, MarketOrder, Order, StopOrder
from pydantic import BaseModel, ConfigDict, Field

from features.rolls import front_month
from infra.contracts import (
    OrderRole,
    OrderSide,
    OrderType,
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
from trader.venues.ib_events import IbOrder, IbOrderEvents, ib_price
from trader.venues.ib_watch import watch_ib

__all__ = ["IbVenue", "IbVenueSettings"]

log = logging.getLogger(__name__)

_IB_TYPES: dict[OrderType, str] = {"market": "MKT", "limit": "LMT", "stop": "STP"}


class IbVenueSettings(BaseModel):
    """Where the gateway listens and which account trades (`IB_HOST`, `IB_PORT`, ...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(default=4002, gt=0, lt=65536)
    client_id: int = Field(default=1, ge=0)
    account: str = ""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    settle_timeout_s: float = Field(default=5.0, ge=0)  # disconnect waits for closing fills
    commission_wait_s: float = Field(default=10.0, ge=0)  # then a fill is published without
    reconnect_delays_s: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
    #: seconds with nothing received after which an open connection is dead (0: off)
    silence_timeout_s: float = Field(default=30.0, ge=0)
    watch_s: float = Field(default=0.25, gt=0)  # how often the watch looks

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> IbVenueSettings:
        """Return the IB settings of the process settings."""
        values: dict[str, Any] = {
            "host": settings.ib_host,
            "port": settings.ib_port,
            "client_id": settings.ib_client_id,
            "account": settings.ib_account,
            "silence_timeout_s": settings.ib_silence_timeout_s,
        }
        return cls(**{**values, **overrides})


class IbVenue(IbOrderEvents, Venue):
    """Interactive Brokers behind the venue interface (see the module docstring)."""

    name = "ib"

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        config: IbVenueSettings | None = None,
        *,
        ib: IB | None = None,
    ) -> None:
        super().__init__()
        self.config = config or IbVenueSettings()
        self.instruments = dict(instruments)
        self.ib = ib or IB()
        self.contracts: dict[str, Future] = {}
        self._orders: dict[str, IbOrder] = {}
        self._by_ib: dict[int, str] = {}
        self._used: set[str] = set()
        self._execs: set[str] = set()
        self._last: dict[str, float] = {}
        self._closing = False
        self._task: asyncio.Task[None] | None = None  # the reconnect loop
        self._resync_task: asyncio.Task[None] | None = None  # catching up after error 1102
        self._watch: asyncio.Task[None] | None = None  # the silence watch (`ib_watch`)
        self.reconnects = 0
        self._settled = asyncio.Event()  # set when no flatten order waits for its fill
        self.ib.orderStatusEvent += self._on_status
        self.ib.commissionReportEvent += self._on_commission
        self.ib.execDetailsEvent += self._on_exec
        self.commission_wait_s = self.config.commission_wait_s
        self.ib.disconnectedEvent += self._on_disconnected
        self.ib.errorEvent += self._on_error

    @classmethod
    def from_settings(
        cls, settings: Settings, instruments: Mapping[str, Instrument], **overrides: Any
    ) -> IbVenue:
        """Return an IB venue configured from the process settings."""
        return cls(instruments, IbVenueSettings.from_settings(settings, **overrides))

    # connection ---------------------------------------------------------

    async def connect(self) -> None:
        """Connect, qualify the front contracts and catch up on what happened meanwhile."""
        self._closing = False
        if self._task is not None:  # a reconnect in flight gives way to this one
            self._task.cancel()
            self._task = None
            self.ib.disconnect()
        self._set_state(ConnectionState.CONNECTING)
        try:
            await self._session()
        except Exception:
            self._set_state(ConnectionState.DISCONNECTED)
            raise

    async def _session(self) -> None:
        c = self.config
        await self.ib.connectAsync(
            c.host, c.port, clientId=c.client_id, timeout=c.connect_timeout_s, account=c.account
        )
        now = datetime.now(UTC)
        wanted = []
        for symbol in self.instruments:
            year, month = front_month(now.date())
            wanted.append(Future(symbol, f"{year}{month:02d}", "CME", currency="USD"))
        qualified = await asyncio.wait_for(
            self.ib.qualifyContractsAsync(*wanted), c.connect_timeout_s
        )
        for want, got in zip(wanted, qualified, strict=True):
            if isinstance(got, Future):
                self.contracts[want.symbol] = got
            else:
                log.warning(
                    "ib: no CME contract for %s %s", want.symbol, want.lastTradeDateOrContractMonth
                )
        self._catch_up()
        if self._watch is not None:
            self._watch.cancel()
        self._watch = asyncio.create_task(self._watch_silence())
        self._set_state(ConnectionState.CONNECTED)

    async def _watch_silence(self) -> None:
        """Close a connection that stays open with nothing arriving (`ib_watch`); reconnect follows."""
        c = self.config
        silent_s = await watch_ib(self.ib, c.silence_timeout_s, c.watch_s, f"{c.host}:{c.port}")
        if silent_s and not self._closing:
            self.ib.disconnect()  # disconnectedEvent: CONNECTING, reconnect, catch-up

    async def disconnect(self) -> None:
        """Close the session (orders at the gateway keep working)."""
        closers = [o for o in self._orders.values() if o.role == "flatten" and not o.done]
        if closers and self.connected and self.config.settle_timeout_s > 0:
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), self.config.settle_timeout_s)
        self._closing = True
        for task in (self._task, self._watch):
            if task is not None:
                task.cancel()
        self._task = self._watch = None
        self.ib.disconnect()
        self._set_state(ConnectionState.DISCONNECTED)

    def _on_disconnected(self) -> None:
        if self._resync_task is not None:
            self._resync_task.cancel()
            self._resync_task = None
        if self._closing or self._task is not None:
            return
        self._set_state(ConnectionState.CONNECTING)
        self._task = asyncio.get_event_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Reconnect with backoff until the gateway answers (or `disconnect` is called)."""
        delays = self.config.reconnect_delays_s
        attempt = 0
        try:
            while not self._closing:
                await asyncio.sleep(delays[min(attempt, len(delays) - 1)])  # backoff
                attempt += 1
                try:
                    await self._session()
                except (OSError, TimeoutError, ConnectionError) as exc:
                    log.warning("ib: reconnect attempt %d failed: %s", attempt, exc)
                    self.ib.disconnect()
                    self._set_state(ConnectionState.CONNECTING)
                    continue
                self.reconnects += 1
                log.info("ib: session back after %d attempt(s)", attempt)
                return
        finally:
            self._task = None

    def _require_session(self) -> None:
        if self._state is not ConnectionState.CONNECTED or not self.ib.isConnected():
            raise VenueDisconnected(f"venue {self.name!r} is {self._state.value}")

    def _on_error(self, req_id: int, code: int, message: str, contract: Any) -> None:
        """Follow the gateway's link to IB's servers (1100 lost, 1101/1102 restored)."""
        if code == 1100 and self._state is ConnectionState.CONNECTED:
            log.warning("ib: %s", message)
            self._set_state(ConnectionState.CONNECTING)
        elif (
            code in (1101, 1102)
            and self._state is ConnectionState.CONNECTING
            and self._task is None
            and self._resync_task is None
            and self.ib.isConnected()
        ):
            self._resync_task = asyncio.get_event_loop().create_task(self._resync())

    async def _resync(self) -> None:
        """Catch up after the gateway's servers came back (the socket stayed up)."""
        timeout = self.config.connect_timeout_s
        try:
            await asyncio.wait_for(self.ib.reqExecutionsAsync(), timeout)
            await asyncio.wait_for(self.ib.reqPositionsAsync(), timeout)
            trades = await asyncio.wait_for(self.ib.reqOpenOrdersAsync(), timeout)
            self._catch_up({t.order.orderId for t in trades})
            self.reconnects += 1
            self._set_state(ConnectionState.CONNECTED)
        except (TimeoutError, ConnectionError) as exc:
            log.warning("ib: catching up after the servers came back failed: %s", exc)
        finally:
            self._resync_task = None

    def _catch_up(self, live: set[int] | None = None) -> None:
        """Publish executions missed while away; close orders the gateway no longer works.

        `live` are the ids of the orders the gateway works (default: ib_async's open trades).
        """
        for fill in sorted(self.ib.fills(), key=lambda f: f.execution.time):
            cid = self._by_ib.get(fill.execution.orderId) or fill.execution.orderRef
            o = self._orders.get(cid)
            if o is not None:
                self._fill(o, fill, fill.commissionReport.commission)
        if live is None:
            live = {t.order.orderId for t in self.ib.openTrades()}
        for o in list(self._orders.values()):
            if o.done or o.ib.orderId in live:
                continue
            if o.role in ("stop", "target") and not o.announced:
                entry = self._orders.get(o.parent_id)
                if entry is not None and not entry.done:
                    continue  # waits for its entry, which the gateway may still work
            self._close(o, self._oco_reason(o) or "not working after reconnect")

    # orders -------------------------------------------------------------

    def submit_bracket(self, order: BracketOrder) -> None:
        """Send the entry, stop and target as one IB bracket (the last child transmits)."""
        self._require_session()
        ids = (order.client_order_id, *(order.child_id(r) for r in ("stop", "target", "flatten")))
        for cid in ids:
            if cid in self._used:
                raise DuplicateClientOrderId(f"client order id {cid!r} was already used")
        self._used.update(ids)
        contract = self.contracts.get(order.symbol)
        inst = self.instruments.get(order.symbol)
        ref = order.limit_price if order.entry_type == "limit" else self._last.get(order.symbol)
        if contract is None or inst is None or ref is None:
            why = (
                f"no IB contract for symbol {order.symbol!r}"
                if contract is None or inst is None
                else f"no price for {order.symbol!r} yet: a market bracket needs a bar first"
            )
            self._refuse_unsent(order, why)
            return
        sign, acct = order.sign, self.config.account
        entry_action, exit_action = ("BUY", "SELL") if sign > 0 else ("SELL", "BUY")
        oca = f"oca-{order.client_order_id}"
        parent: Order = (
            LimitOrder(entry_action, order.quantity, inst.round_price(ref))
            if order.entry_type == "limit"
            else MarketOrder(entry_action, order.quantity)
        )
        parent.orderId = self.ib.client.getReqId()
        stop = StopOrder(
            exit_action, order.quantity, inst.round_price(ref - sign * order.stop_distance)
        )
        target = LimitOrder(
            exit_action, order.quantity, inst.round_price(ref + sign * order.target_distance)
        )
        exit_side: OrderSide = "sell" if sign > 0 else "buy"
        legs: list[tuple[Order, str, OrderRole, OrderSide, OrderType, str]] = [
            (parent, order.client_order_id, "entry", order.side, order.entry_type, ""),
            (stop, order.child_id("stop"), "stop", exit_side, "stop", order.client_order_id),
            (target, order.child_id("target"), "target", exit_side, "limit", order.client_order_id),
        ]
        for i, (ib_order, cid, role, side, otype, parent_cid) in enumerate(legs):
            ib_order.orderRef, ib_order.account, ib_order.tif = (
                cid,
                acct,
                "DAY" if i == 0 else "GTC",
            )
            ib_order.transmit = i == 2
            if i:
                ib_order.orderId = self.ib.client.getReqId()
                ib_order.parentId, ib_order.ocaGroup, ib_order.ocaType = parent.orderId, oca, 3
            self._orders[cid] = IbOrder(
                cid,
                order.symbol,
                role,
                side,
                otype,
                ib_order,
                order,
                parent_id=parent_cid,
            )
            self._by_ib[ib_order.orderId] = cid
        self._announce(self._orders[order.client_order_id])
        for ib_order, *_ in legs:
            self.ib.placeOrder(contract, ib_order)

    def _refuse_unsent(self, order: BracketOrder, why: str) -> None:
        """Publish a bracket the gateway never saw as submitted and rejected."""
        o = IbOrder(
            order.client_order_id,
            order.symbol,
            "entry",
            order.side,
            order.entry_type,
            Order(totalQuantity=order.quantity, lmtPrice=order.limit_price or 0.0),
            order,
        )
        self._orders[o.client_order_id] = o
        self._announce(o)
        self._reject(o, why)

    def modify(
        self,
        client_order_id: str,
        *,
        quantity: int | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
    ) -> None:
        """Send the order again under its IB id with new terms."""
        self._require_session()
        o = self._working(client_order_id)
        if quantity is not None:
            if o.role != "entry" or quantity < max(1, o.filled):
                raise InvalidOrder(f"cannot set the quantity of {client_order_id!r} to {quantity}")
            o.ib.totalQuantity = quantity
        if limit_price is not None:
            if o.order_type != "limit" or limit_price <= 0:
                raise InvalidOrder(f"{client_order_id!r} takes no limit price {limit_price}")
            o.ib.lmtPrice = limit_price
        if stop_price is not None:
            if o.order_type != "stop" or stop_price <= 0:
                raise InvalidOrder(f"{client_order_id!r} takes no stop price {stop_price}")
            o.ib.auxPrice = stop_price
        o.ib.transmit = True
        self.ib.placeOrder(self.contracts[o.symbol], o.ib)
        if o.announced:
            self._accepted(o)

    def _working(self, client_order_id: str) -> IbOrder:
        o = self._orders.get(client_order_id)
        if o is None or o.done:
            raise UnknownOrder(f"no working order {client_order_id!r}")
        return o

    def cancel(self, client_order_id: str) -> None:
        """Ask the gateway to cancel a working order; `OrderCancelled` follows."""
        self._require_session()
        o = self._working(client_order_id)
        o.cancel_reason = o.cancel_reason or "requested"
        self.ib.cancelOrder(o.ib)

    def cancel_all(self, symbol: str | None = None) -> None:
        """Cancel every working order (of one symbol)."""
        self._require_session()
        for o in list(self._orders.values()):
            if not o.done and (symbol is None or o.symbol == symbol):
                o.cancel_reason = o.cancel_reason or "cancel_all"
                self.ib.cancelOrder(o.ib)

    def flatten(self, symbol: str | None = None, reason: str = "requested") -> None:
        """Cancel working orders, then close each net position with a market order."""
        self._require_session()
        for o in list(self._orders.values()):
            if not o.done and (symbol is None or o.symbol == symbol):
                o.cancel_reason = o.cancel_reason or reason
                self.ib.cancelOrder(o.ib)
        for p in self.positions():
            if symbol is not None and p.symbol != symbol:
                continue
            entries = [
                o
                for o in reversed(self._orders.values())
                if o.role == "entry" and o.symbol == p.symbol and o.filled
            ]
            open_ids = {
                o.parent_id
                for o in self._orders.values()
                if o.role in ("stop", "target") and not o.done
            }
            # the bracket still working names the flatten; else the latest filled entry
            entry = next((e for e in entries if e.client_order_id in open_ids), None) or next(
                iter(entries), None
            )
            order_id = self.ib.client.getReqId()
            cid = f"{p.symbol.lower()}-{order_id}-flatten"  # a position no bracket of ours explains
            if entry is not None and entry.bracket is not None:
                cid = entry.bracket.child_id("flatten")
                if cid in self._orders:
                    cid = f"{cid}-{order_id}"
            side: OrderSide = "sell" if p.quantity > 0 else "buy"
            mkt = MarketOrder("SELL" if p.quantity > 0 else "BUY", abs(p.quantity))
            mkt.orderId, mkt.orderRef, mkt.account = order_id, cid, self.config.account
            bracket = entry.bracket if entry is not None else None
            parent = entry.client_order_id if entry is not None else ""
            o = IbOrder(cid, p.symbol, "flatten", side, "market", mkt, bracket, parent)
            self._orders[cid], self._by_ib[mkt.orderId] = o, cid
            self._used.add(cid)
            self._announce(o, reason)
            self.ib.placeOrder(self.contracts[p.symbol], mkt)

    def positions(self) -> list[Position]:
        """Return the account's net futures positions per symbol (from the gateway)."""
        out: list[Position] = []
        for p in self.ib.positions(self.config.account):
            c = p.contract
            if c.symbol not in self.instruments or not p.position:
                continue
            mult = float(c.multiplier or 1)
            out.append(Position(c.symbol, int(p.position), p.avgCost / mult, c.localSymbol))
        return out

    def working_orders(self) -> list[WorkingOrder]:
        """Return the orders the gateway works for this client, with our ids."""
        out: list[WorkingOrder] = []
        for t in self.ib.openTrades():
            cid = self._by_ib.get(t.order.orderId) or t.order.orderRef
            o = self._orders.get(cid)
            if o is None or o.done or not o.announced:
                continue  # children join once their entry filled
            out.append(
                WorkingOrder(
                    client_order_id=cid,
                    symbol=o.symbol,
                    role=o.role,
                    side=o.side,
                    quantity=o.quantity,
                    order_type=o.order_type,
                    filled_quantity=o.filled,
                    limit_price=ib_price(o.ib.lmtPrice) if o.order_type == "limit" else None,
                    stop_price=ib_price(o.ib.auxPrice) if o.order_type == "stop" else None,
                    parent_id=o.parent_id,
                    venue_order_id=str(o.ib.orderId),
                    contract=t.contract.localSymbol,
                )
            )
        return out

    def on_bar(self, bar: MarketBar, session: SessionState) -> None:
        """Keep the last close: market brackets place their children from it."""
        self._last[bar.symbol] = bar.close
