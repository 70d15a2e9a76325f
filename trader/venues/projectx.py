"""The `projectx` venue: TopstepX and other ProjectX Gateway firms through `projectx-sdk`.

- REST through the SDK's `ProjectXClient` (accounts, contracts, orders, positions,
  trades); its calls block, so they run one at a time, in order, in a worker
  thread. The session token comes from `/api/Auth/loginKey` and is handed to the
  client (the SDK's own login would cache it in a file under the home directory).
- Real-time order, trade and position updates from the user hub through
  `signalrcore` (the SDK's SignalR library, with the SDK's hub options: no
  negotiation, the token in the query string).
- Contracts: the front month of each symbol from the roll calendar
  (`features.rolls`), found by name (`ESZ4`) with `/api/Contract/search`.
- A bracket is one `/api/Order/place`: the entry (market or limit, `customTag` =
  the client order id) with `stopLossBracket` and `takeProfitBracket` in ticks;
  the Gateway places the stop and the target once the entry fills and cancels one
  when the other fills. Those children arrive as new orders on the contract and
  take the bracket's child ids (stop: a stop order, target: a limit order).
- Trades become `OrderFilled` (`fees` as commission, the trade id as fill id);
  order states become `OrderAccepted` (also after a modify), `OrderCancelled`
  (`oco` when the sibling filled), `OrderExpired` and `OrderRejected`.
- `flatten`: cancel the symbol's orders, then `/api/Position/closeContract`
  (role `flatten`).
- NQ trades only with `TOPSTEPX_ENABLE_NQ`; otherwise its brackets are rejected.
- A dropped hub, or one open with nothing received for
  `PROJECTX_SILENCE_TIMEOUT_S` (`projectx_watch`), moves the state to
  `CONNECTING` and the venue logs in again with backoff; once back, orders and trades missed meanwhile are replayed from
  `/api/Order/search` and `/api/Trade/search`, then the state is `CONNECTED` and
  the trading process reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from projectx_sdk import ProjectXClient
from signalrcore.hub_connection_builder import HubConnectionBuilder

from features.rolls import QUARTERLY_ROOTS, contract_code, front_month
from infra.contracts import (
    OrderRole,
    OrderSide,
    OrderType,
)
from infra.settings import Settings
from trader.core.instruments import Instrument
from trader.venues.base import (
    BracketOrder,
    ConnectionState,
    DuplicateClientOrderId,
    InvalidOrder,
    Position,
    UnknownOrder,
    Venue,
    VenueDisconnected,
    WorkingOrder,
)
from trader.venues.projectx_config import (
    ProjectxVenueSettings,
    login_key,
    pick_account,
    stop_hub_quietly,
)
from trader.venues.projectx_updates import (
    TYPE_LIMIT,
    TYPE_MARKET,
    TYPE_STOP,
    ProjectxUpdates,
    _Order,
)
from trader.venues.projectx_watch import HubWatch

__all__ = ["ProjectxVenue", "ProjectxVenueSettings", "login_key", "stop_hub_quietly"]

log = logging.getLogger(__name__)


class ProjectxVenue(ProjectxUpdates, Venue):
    """The ProjectX Gateway behind the venue interface (see the module docstring)."""

    name = "projectx"

    def __init__(
        self, instruments: Mapping[str, Instrument], config: ProjectxVenueSettings | None = None
    ) -> None:
        super().__init__()
        self.config = config or ProjectxVenueSettings()
        self.instruments = dict(instruments)
        self.client: ProjectXClient | None = None
        self.account_id = 0
        self.contracts: dict[str, dict[str, Any]] = {}  # symbol -> {"id", "name"}
        self._symbol_of: dict[str, str] = {}
        self._orders: dict[str, _Order] = {}
        self._by_venue: dict[int, str] = {}
        self._used: set[str] = set()
        self._trades: set[int] = set()
        self._positions: dict[str, Position] = {}
        self._history: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        self._hub: Any = None
        self._watch: asyncio.Task[None] | None = None  # the hub's silence watch
        self._jobs: asyncio.Queue[Callable[[], Any]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._since = datetime.now(UTC) - timedelta(days=1)
        self.reconnects = 0
        self._logged_in_s = 0.0

    @classmethod
    def from_settings(
        cls, settings: Settings, instruments: Mapping[str, Instrument], **overrides: Any
    ) -> ProjectxVenue:
        """Return a ProjectX venue configured from the process settings."""
        return cls(instruments, ProjectxVenueSettings.from_settings(settings, **overrides))

    # connection ---------------------------------------------------------

    async def connect(self) -> None:
        """Log in, find the account and contracts, open the user hub and catch up."""
        self._loop = asyncio.get_running_loop()
        self._closing = False
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())
        self._set_state(ConnectionState.CONNECTING)
        try:
            await self._session()
        except Exception:
            self._set_state(ConnectionState.DISCONNECTED)
            raise

    async def _session(self) -> None:
        self._stop_hub()
        c = self.config
        token = await asyncio.to_thread(self._login)
        client = ProjectXClient(
            base_url=c.api_url.rstrip("/"), token=token, timeout=int(c.request_timeout_s)
        )
        self.client = client
        self._logged_in_s = time.monotonic()
        accounts = await asyncio.to_thread(client.accounts.search, True)
        self.account_id = pick_account(accounts, c.account)
        year, month = front_month(datetime.now(UTC).date())
        for symbol in self.instruments:
            code = contract_code(symbol, year, month) if _quarterly(symbol) else ""
            found = await asyncio.to_thread(client.contracts.search, symbol, False)
            match = next((x for x in found if x.name == code), None)
            if match is None:
                log.warning("projectx: no contract %s for %s", code, symbol)
                continue
            self.contracts[symbol] = {"id": match.id, "name": match.name}
            self._symbol_of[match.id] = symbol
        await self._open_hub(token)
        await self._catch_up(client)
        self._set_state(ConnectionState.CONNECTED)

    def _login(self) -> str:
        c = self.config
        return login_key(c.api_url, c.username, c.api_key, c.request_timeout_s)

    async def _open_hub(self, token: str) -> None:
        loop = asyncio.get_running_loop()
        opened = asyncio.Event()
        hub = (
            HubConnectionBuilder()
            .with_url(
                f"{self.config.hub_url}?access_token={token}",
                options={"skip_negotiation": True, "access_token_factory": lambda: token},
            )
            .build()
        )

        def post(fn: Callable[..., None], *args: Any) -> None:
            loop.call_soon_threadsafe(fn, *args)

        hub.on_open(lambda: post(opened.set))
        hub.on_close(lambda: post(self._hub_closed, hub))
        hub.on("GatewayUserOrder", lambda args: post(self._on_hub, "order", args))
        hub.on("GatewayUserTrade", lambda args: post(self._on_hub, "trade", args))
        hub.on("GatewayUserPosition", lambda args: post(self._on_hub, "position", args))
        c = self.config
        watch = HubWatch(hub, "user", c.silence_timeout_s, c.keepalive_s)
        self._hub = hub
        hub.start()
        try:
            await asyncio.wait_for(opened.wait(), self.config.connect_timeout_s)
        except TimeoutError:
            self._stop_hub()
            raise ConnectionError(
                f"projectx: user hub {self.config.hub_url} did not open"
            ) from None
        for method in ("SubscribeAccounts",):
            hub.send(method, [])
        for method in ("SubscribeOrders", "SubscribePositions", "SubscribeTrades"):
            hub.send(method, [self.account_id])
        self._watch = asyncio.create_task(watch.run(c.watch_s, lambda: self._hub_closed(hub)))

    def _stop_hub(self) -> None:
        hub, self._hub = self._hub, None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if hub is not None:
            stop_hub_quietly(hub)

    def _hub_closed(self, hub: Any) -> None:
        if hub is not self._hub or self._closing:
            return
        self._stop_hub()  # closed already, or open and silent (`projectx_watch`)
        self._set_state(ConnectionState.CONNECTING)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Log in again with backoff until the Gateway answers (or `disconnect` is called)."""
        delays = self.config.reconnect_delays_s
        attempt = 0
        try:
            while not self._closing:
                await asyncio.sleep(delays[min(attempt, len(delays) - 1)])  # backoff
                attempt += 1
                try:
                    await self._session()
                except (OSError, ConnectionError, requests.RequestException, Exception) as exc:
                    log.warning("projectx: reconnect attempt %d failed: %s", attempt, exc)
                    self._stop_hub()
                    self._set_state(ConnectionState.CONNECTING)
                    continue
                self.reconnects += 1
                log.info("projectx: session back after %d attempt(s)", attempt)
                return
        finally:
            self._task = None

    async def disconnect(self) -> None:
        """Close the session (orders at the Gateway keep working)."""
        await self.drain()
        self._closing = True
        for task in (self._task, self._worker):
            if task is not None:
                task.cancel()
        self._task = self._worker = None
        self._stop_hub()
        self._set_state(ConnectionState.DISCONNECTED)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until every queued request has been answered."""
        if self._worker is not None and not self._worker.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._jobs.join(), timeout_s)

    def _require_session(self) -> None:
        if self._state is not ConnectionState.CONNECTED or self._hub is None:
            raise VenueDisconnected(f"venue {self.name!r} is {self._state.value}")

    async def _catch_up(self, client: ProjectXClient) -> None:
        """Replay orders and trades missed while away; refresh the positions."""
        body = {"accountId": self.account_id, "startTimestamp": self._since.isoformat()}
        orders = (await asyncio.to_thread(client.post, "Order/search", json=body)).get("orders", [])
        trades = (await asyncio.to_thread(client.post, "Trade/search", json=body)).get("trades", [])
        self._history = (orders, trades)
        self._replay(orders, trades)
        positions = await asyncio.to_thread(client.positions.search_open, self.account_id)
        self._positions.clear()
        for p in positions:
            self._apply_position(
                {
                    "contractId": p.contract_id,
                    "type": p.type,
                    "size": p.size,
                    "averagePrice": p.average_price,
                }
            )

    # the request worker -----------------------------------------------------

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                await self._fresh_token()
                await asyncio.to_thread(job)
            except Exception as exc:  # a refused request becomes an event, never a crash
                log.warning("projectx: request failed: %s", exc)
            finally:
                self._jobs.task_done()

    async def _fresh_token(self) -> None:
        """Log in again when the token is older than `token_refresh_s` (Gateway tokens last 24 h).

        The SDK would renew it itself near expiry and cache the new token in a file under
        the home directory; a new login keeps it in memory only.
        """
        client = self.client
        if client is None or time.monotonic() - self._logged_in_s < self.config.token_refresh_s:
            return
        client.auth.token = await asyncio.to_thread(self._login)
        client.auth.token_expiry = datetime.now() + timedelta(hours=24)
        self._logged_in_s = time.monotonic()

    def _call(self, job: Callable[[], Any], on_error: Callable[[str], None] | None = None) -> None:
        loop = self._loop

        def run() -> None:
            try:
                job()
            except Exception as exc:
                if on_error is not None and loop is not None:
                    loop.call_soon_threadsafe(on_error, str(exc))
                raise

        self._jobs.put_nowait(run)

    # orders -------------------------------------------------------------

    def submit_bracket(self, order: BracketOrder) -> None:
        """Place the entry with the Gateway's stop-loss and take-profit brackets."""
        self._require_session()
        ids = (order.client_order_id, *(order.child_id(r) for r in ("stop", "target", "flatten")))
        for cid in ids:
            if cid in self._used:
                raise DuplicateClientOrderId(f"client order id {cid!r} was already used")
        self._used.update(ids)
        exit_side: OrderSide = "sell" if order.sign > 0 else "buy"
        entry = self._record(
            order.client_order_id,
            order.symbol,
            "entry",
            order.side,
            order.entry_type,
            order.quantity,
            order,
            limit_price=order.limit_price,
        )
        children: tuple[tuple[OrderRole, OrderType], ...] = (("stop", "stop"), ("target", "limit"))
        for role, kind in children:
            self._orders[order.child_id(role)] = _Order(
                order.child_id(role),
                order.symbol,
                role,
                exit_side,
                kind,
                order.quantity,
                order,
                parent_id=order.client_order_id,
            )  # type: ignore[arg-type]
        self._announce(entry)
        contract = self.contracts.get(order.symbol)
        inst = self.instruments.get(order.symbol)
        if order.symbol == "NQ" and not self.config.enable_nq:
            self._reject(entry, "NQ is not enabled on projectx (set TOPSTEPX_ENABLE_NQ=1)")
            return
        if contract is None or inst is None:
            self._reject(entry, f"no ProjectX contract for symbol {order.symbol!r}")
            return
        body = {
            "accountId": self.account_id,
            "contractId": contract["id"],
            "type": TYPE_LIMIT if order.entry_type == "limit" else TYPE_MARKET,
            "side": 0 if order.sign > 0 else 1,
            "size": order.quantity,
            "limitPrice": inst.round_price(order.limit_price) if order.limit_price else None,
            "stopPrice": None,
            "customTag": order.client_order_id,
            "stopLossBracket": {
                "ticks": max(1, round(order.stop_distance / inst.tick_size)),
                "type": TYPE_STOP,
            },
            "takeProfitBracket": {
                "ticks": max(1, round(order.target_distance / inst.tick_size)),
                "type": TYPE_LIMIT,
            },
        }
        client = self.client
        assert client is not None
        loop = self._loop
        assert loop is not None

        def place() -> None:
            answer = client.post("Order/place", json=body)
            loop.call_soon_threadsafe(self._placed, entry, int(answer.get("orderId") or 0))

        self._call(place, lambda why: self._reject(entry, why))

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

    def modify(
        self,
        client_order_id: str,
        *,
        quantity: int | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
    ) -> None:
        """Send `/api/Order/modify`; the hub's order update confirms the new terms."""
        self._require_session()
        o = self._working(client_order_id)
        if quantity is not None and (o.role != "entry" or quantity < max(1, o.filled)):
            raise InvalidOrder(f"cannot set the quantity of {client_order_id!r} to {quantity}")
        if limit_price is not None and (o.order_type != "limit" or limit_price <= 0):
            raise InvalidOrder(f"{client_order_id!r} takes no limit price {limit_price}")
        if stop_price is not None and (o.order_type != "stop" or stop_price <= 0):
            raise InvalidOrder(f"{client_order_id!r} takes no stop price {stop_price}")
        client = self.client
        assert client is not None
        account = self.account_id
        self._call(
            lambda: client.orders.modify(
                account, o.venue_id, size=quantity, limit_price=limit_price, stop_price=stop_price
            )
        )

    def _working(self, client_order_id: str) -> _Order:
        o = self._orders.get(client_order_id)
        if o is None or o.done or not o.accepted:
            raise UnknownOrder(f"no working order {client_order_id!r}")
        return o

    def cancel(self, client_order_id: str) -> None:
        """Send `/api/Order/cancel`; `OrderCancelled` follows from the hub."""
        self._require_session()
        o = self._working(client_order_id)
        o.cancel_reason = o.cancel_reason or "requested"
        self._send_cancel(o)

    def _send_cancel(self, o: _Order) -> None:
        client = self.client
        assert client is not None
        account = self.account_id
        self._call(lambda: client.orders.cancel(account, o.venue_id))

    def cancel_all(self, symbol: str | None = None) -> None:
        """Cancel every working order (of one symbol)."""
        self._require_session()
        for o in list(self._orders.values()):
            if o.accepted and not o.done and (symbol is None or o.symbol == symbol):
                o.cancel_reason = o.cancel_reason or "cancel_all"
                self._send_cancel(o)

    def flatten(self, symbol: str | None = None, reason: str = "requested") -> None:
        """Cancel working orders, then close each position with `/api/Position/closeContract`."""
        self._require_session()
        for o in list(self._orders.values()):
            if o.accepted and not o.done and (symbol is None or o.symbol == symbol):
                o.cancel_reason = o.cancel_reason or reason
                self._send_cancel(o)
        client = self.client
        assert client is not None
        for p in self.positions():
            if symbol is not None and p.symbol != symbol:
                continue
            entry = self._holding_entry(p.symbol)
            cid = (
                entry.bracket.child_id("flatten")
                if entry and entry.bracket
                else f"{p.symbol}-flatten"
            )
            while cid in self._orders:
                cid = f"{cid}-{len(self._orders)}"
            side: OrderSide = "sell" if p.quantity > 0 else "buy"
            o = self._record(
                cid,
                p.symbol,
                "flatten",
                side,
                "market",
                abs(p.quantity),
                entry.bracket if entry else None,
                parent_id=entry.client_order_id if entry else "",
            )
            self._used.add(cid)
            self._announce(o, reason)
            body = {"accountId": self.account_id, "contractId": self.contracts[p.symbol]["id"]}
            self._close_contract(client, body, o)

    def _holding_entry(self, symbol: str) -> _Order | None:
        """Return the filled entry whose bracket still works an order (else the last filled)."""
        filled = [
            o
            for o in self._orders.values()
            if o.role == "entry" and o.symbol == symbol and o.filled
        ]
        for o in reversed(filled):
            kids = (
                [self._orders.get(o.bracket.child_id(r)) for r in ("stop", "target")]
                if o.bracket
                else []
            )
            if any(k is not None and k.accepted and not k.done for k in kids):
                return o
        return filled[-1] if filled else None

    def _close_contract(self, client: ProjectXClient, body: dict[str, Any], o: _Order) -> None:
        self._call(
            lambda: client.post("Position/closeContract", json=body),
            lambda why: self._reject(o, why),
        )

    def positions(self) -> list[Position]:
        """Return the account's open positions (the hub keeps them current)."""
        return list(self._positions.values())

    def working_orders(self) -> list[WorkingOrder]:
        """Return the orders the Gateway works for us, with our ids."""
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
                venue_order_id=str(o.venue_id),
                contract=self.contracts.get(o.symbol, {}).get("name", ""),
            )
            for o in self._orders.values()
            if o.accepted and not o.done
        ]


def _quarterly(symbol: str) -> bool:
    return symbol in QUARTERLY_ROOTS
