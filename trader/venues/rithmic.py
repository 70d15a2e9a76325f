"""The `rithmic` venue: Rithmic's R|Protocol API through `async_rithmic`'s `RithmicClient`.

- Two plants: the order plant (orders, order and bracket update subscriptions) and
  the PnL plant (position snapshots and updates), logged in to `RITHMIC_SYSTEM`
  at `RITHMIC_URL` as `RITHMIC_USER`. Requests go one at a time, in order, from a
  worker task; order methods never wait for them.
- Contracts: each symbol's front month from the roll calendar (`features.rolls`),
  by its code (`ESZ6`) on `RITHMIC_EXCHANGE`.
- A bracket is one `RequestBracketOrder` (`submit_order` with `stop_ticks` and
  `target_ticks`, `TARGET_AND_STOP_STATIC`): the entry (market or limit,
  `user_tag` = the client order id); the gateway places the stop and the target
  once the entry fills and cancels one when the other fills. They take the
  bracket's child ids (`trader.venues.rithmic_updates` says how they are known).
- `ExchangeOrderNotification` fills become `OrderFilled` (the fill id as the venue
  fill id, `RITHMIC_COMMISSION_USD` per contract as commission);
  `RithmicOrderNotification`s become `OrderAccepted` (open, modified),
  `OrderCancelled` (`oco` when the sibling filled), `OrderExpired` and
  `OrderRejected` (with the gateway's text).
- `flatten`: cancel the symbol's orders, then a market `RequestNewOrder` for the
  whole position (role `flatten`, its own user tag).
- A plant whose websocket closed, or stayed open with nothing received for
  `RITHMIC_SILENCE_TIMEOUT_S` (`trader.venues.rithmic_watch`), moves the state to
  `CONNECTING`; the venue closes the session, logs both plants in again with
  backoff, catches up (the order history of yesterday and today, the fill history
  since the last session, the PnL plant's positions), then the state is
  `CONNECTED` and the trading process reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from async_rithmic import RithmicClient
from async_rithmic.enums import OrderType, SysInfraType, TransactionType

from features.rolls import QUARTERLY_ROOTS, contract_code, front_month
from infra.contracts import OrderRole, OrderSide
from infra.contracts import OrderType as OurOrderType
from infra.settings import Settings
from trader.core.instruments import Instrument
from trader.venues.base import (
    BracketOrder,
    ConnectionState,
    DuplicateClientOrderId,
    InvalidOrder,
    Position,
    Venue,
    VenueDisconnected,
)
from trader.venues.rithmic_catchup import RithmicCatchUp
from trader.venues.rithmic_config import (
    RithmicVenueSettings,
    connect_plants,
    new_client,
    pick_account,
    quiet_disconnect,
)
from trader.venues.rithmic_updates import _Order
from trader.venues.rithmic_watch import PlantWatch

__all__ = ["RithmicVenue", "RithmicVenueSettings"]

log = logging.getLogger(__name__)

_PLANTS = (SysInfraType.ORDER_PLANT, SysInfraType.PNL_PLANT)
Job = Callable[[], Awaitable[None]]


class RithmicVenue(RithmicCatchUp, Venue):
    """Rithmic behind the venue interface (see the module docstring)."""

    name = "rithmic"

    def __init__(
        self, instruments: Mapping[str, Instrument], config: RithmicVenueSettings | None = None
    ) -> None:
        super().__init__()
        self.config = config or RithmicVenueSettings()
        self.commission_per_contract_usd = self.config.commission_per_contract_usd
        self.instruments = dict(instruments)
        self.client: RithmicClient | None = None
        self.account_id = ""
        self.contracts: dict[str, str] = {}  # symbol -> contract code
        self._symbol_of: dict[str, str] = {}
        self._orders: dict[str, _Order] = {}
        self._by_basket: dict[str, str] = {}
        self._used: set[str] = set()
        self._fills: set[str] = set()
        self._positions: dict[str, Position] = {}
        self._history: tuple[list[Any], list[Any]] = ([], [])
        #: the PnL plant's latest account update (balances, day PnL), as Rithmic sends it
        self.account_pnl: dict[str, Any] = {}
        self._jobs: asyncio.Queue[Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._closing = False
        self._since = datetime.now(UTC) - timedelta(days=1)
        self.reconnects = 0
        #: symbol -> reason, while a flatten of that symbol is to be completed
        self._flattening: dict[str, str] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, instruments: Mapping[str, Instrument], **overrides: Any
    ) -> RithmicVenue:
        """Return a Rithmic venue configured from the process settings."""
        return cls(instruments, RithmicVenueSettings.from_settings(settings, **overrides))

    # connection ---------------------------------------------------------

    async def connect(self) -> None:
        """Log in to the order and PnL plants, find the account and contracts, catch up."""
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
        await self._drop_client()
        c = self.config
        client = new_client(c)
        client.on_rithmic_order_notification += self._live(client, self._on_rithmic_order)
        client.on_exchange_order_notification += self._live(client, self._on_exchange_order)
        client.on_account_pnl_update += self._live(client, self._on_account_pnl)
        try:
            await connect_plants(client, list(_PLANTS), c.connect_timeout_s)
            self.account_id = pick_account(client.accounts or [], c.account)
        except Exception as exc:
            await quiet_disconnect(client)
            raise ConnectionError(
                f"rithmic: login to {c.system!r} at {c.url} as {c.user!r} failed "
                f"({type(exc).__name__}: {exc}); check RITHMIC_URL, RITHMIC_USER, "
                "RITHMIC_PASSWORD, RITHMIC_SYSTEM, RITHMIC_ACCOUNT and RITHMIC_CA_FILE"
            ) from None
        self.client = client
        year, month = front_month(datetime.now(UTC).date())
        for symbol in self.instruments:
            if symbol in QUARTERLY_ROOTS:
                code = contract_code(symbol, year, month)
                self.contracts[symbol] = code
                self._symbol_of[code] = symbol
        await client.subscribe_to_pnl_updates()
        await self._catch_up(client)
        self._watch = asyncio.create_task(self._watch_plants(client))
        self._set_state(ConnectionState.CONNECTED)

    def _live(self, client: RithmicClient, apply: Callable[[Any], None]) -> Callable[[Any], None]:
        def on(update: Any) -> None:
            if client is not self.client:
                return  # a closed session's late update
            try:
                apply(update)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                log.warning("rithmic: malformed update %r: %s", update, exc)
            except Exception:  # a listener's failure must not stop the library's reader
                log.exception("rithmic: an order event listener failed")

        return on

    async def _watch_plants(self, client: RithmicClient) -> None:
        """Notice a plant closed or silent past its bound (`rithmic_watch`) and reconnect."""
        with PlantWatch(client, ("order", "pnl"), self.config.silence_timeout_s) as watch:
            while client is self.client and not self._closing:
                if lost := watch.lost(self.name):
                    log.warning("rithmic: connection to %s lost: %s", self.config.url, lost)
                    self._set_state(ConnectionState.CONNECTING)
                    if self._task is None:
                        self._task = asyncio.create_task(self._reconnect())
                    return
                await asyncio.sleep(self.config.watch_s)  # the websocket's state has no event

    async def _reconnect(self) -> None:
        """Log in again with backoff until the gateway answers (or `disconnect` is called)."""
        delays = self.config.reconnect_delays_s
        attempt = 0
        try:
            while not self._closing:
                await asyncio.sleep(delays[min(attempt, len(delays) - 1)])  # backoff
                attempt += 1
                try:
                    await self._session()
                except Exception as exc:
                    log.warning("rithmic: reconnect attempt %d failed: %s", attempt, exc)
                    self._set_state(ConnectionState.CONNECTING)
                    continue
                self.reconnects += 1
                log.info("rithmic: session back after %d attempt(s)", attempt)
                return
        finally:
            self._task = None

    async def _drop_client(self) -> None:
        client, self.client = self.client, None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if client is not None:
            await quiet_disconnect(client)

    async def disconnect(self) -> None:
        """Log out of both plants (orders at the gateway keep working).

        Requests still queued are sent first, and flattens and cancels already sent
        get up to `request_timeout_s` to be confirmed, so their fills are not lost.
        """
        await self.drain()
        deadline = asyncio.get_running_loop().time() + self.config.request_timeout_s
        while self.connected and not self._settled():
            if asyncio.get_running_loop().time() > deadline:
                log.warning("rithmic: logging out with unconfirmed flattens or cancels")
                break
            await asyncio.sleep(0.01)  # notifications arrive on the library's reader task
        self._closing = True
        for task in (self._task, self._worker):
            if task is not None:
                task.cancel()
        self._task = self._worker = None
        await self._drop_client()
        self._set_state(ConnectionState.DISCONNECTED)

    def _settled(self) -> bool:
        """Say whether every flatten sent is done and every cancel sent is confirmed."""
        return not any(
            not o.done and (o.role == "flatten" or (o.cancel_reason and o.accepted))
            for o in self._orders.values()
        )

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until every queued request has been answered."""
        if self._worker is not None and not self._worker.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._jobs.join(), timeout_s)

    def _require_session(self) -> RithmicClient:
        if self._state is not ConnectionState.CONNECTED or self.client is None:
            raise VenueDisconnected(f"venue {self.name!r} is {self._state.value}")
        return self.client

    # the request worker -----------------------------------------------------

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                await job()
            except Exception as exc:  # a refused request becomes an event, never a crash
                log.warning("rithmic: request failed: %s", exc)
            finally:
                self._jobs.task_done()

    def _place(self, o: _Order, send: Callable[[], Awaitable[list[Any]]]) -> None:
        """Queue an order request; its answer gives the basket id, a refusal rejects the order."""

        async def job() -> None:
            try:
                answers = await send()
            except (TimeoutError, RuntimeError, ConnectionError, OSError) as exc:
                o.unsure = True  # the next catch-up finds it at the gateway or rejects it
                log.warning("rithmic: no answer to %s: %s", o.client_order_id, exc)
                return
            except Exception as exc:
                self._reject(o, f"{type(exc).__name__}: {exc}")
                return
            if not answers:
                self._reject(o, "the gateway refused the request (its reason is in the log)")
                return
            self._placed(o, str(answers[0].basket_id))

        self._jobs.put_nowait(job)

    # orders -------------------------------------------------------------

    def submit_bracket(self, order: BracketOrder) -> None:
        """Send a `RequestBracketOrder`: the entry with static stop and target ticks."""
        client = self._require_session()
        ids = (order.client_order_id, *(order.child_id(r) for r in ("stop", "target", "flatten")))
        for cid in ids:
            if cid in self._used:
                raise DuplicateClientOrderId(f"client order id {cid!r} was already used")
        self._used.update(ids)
        self._flattening.pop(order.symbol, None)  # trading again: an old flatten is over
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
        children: tuple[tuple[OrderRole, OurOrderType], ...] = (
            ("stop", "stop"),
            ("target", "limit"),
        )
        for role, kind in children:
            self._record(
                order.child_id(role),
                order.symbol,
                role,
                exit_side,
                kind,
                order.quantity,
                order,
                parent_id=order.client_order_id,
            )
        self._announce(entry)
        code = self.contracts.get(order.symbol)
        inst = self.instruments.get(order.symbol)
        if code is None or inst is None:
            self._reject(entry, f"no Rithmic contract for symbol {order.symbol!r}")
            return
        more: dict[str, Any] = {
            "account_id": self.account_id,
            "stop_ticks": max(1, round(order.stop_distance / inst.tick_size)),
            "target_ticks": max(1, round(order.target_distance / inst.tick_size)),
        }
        if order.entry_type == "limit" and order.limit_price:
            more["price"] = inst.round_price(order.limit_price)
        self._place(
            entry,
            lambda: client.submit_order(
                order.client_order_id,
                code,
                self.config.exchange,
                order.quantity,
                TransactionType.BUY if order.sign > 0 else TransactionType.SELL,
                OrderType.LIMIT if order.entry_type == "limit" else OrderType.MARKET,
                **more,
            ),
        )

    def modify(
        self,
        client_order_id: str,
        *,
        quantity: int | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
    ) -> None:
        """Send `RequestModifyOrder`; the `MODIFIED` notification confirms the new terms."""
        client = self._require_session()
        o = self._working(client_order_id)
        if quantity is not None and (o.role != "entry" or quantity < max(1, o.filled)):
            raise InvalidOrder(f"cannot set the quantity of {client_order_id!r} to {quantity}")
        if limit_price is not None and (o.order_type != "limit" or limit_price <= 0):
            raise InvalidOrder(f"{client_order_id!r} takes no limit price {limit_price}")
        if stop_price is not None and (o.order_type != "stop" or stop_price <= 0):
            raise InvalidOrder(f"{client_order_id!r} takes no stop price {stop_price}")
        kind = {"limit": OrderType.LIMIT, "stop": OrderType.STOP_MARKET}.get(
            o.order_type, OrderType.MARKET
        )
        current = SimpleNamespace(
            account_id=self.account_id,
            basket_id=o.basket_id,
            symbol=self.contracts[o.symbol],
            exchange=self.config.exchange,
            quantity=o.quantity,
            price_type=kind,
            price=o.limit_price or 0.0,
        )
        changes: dict[str, Any] = {}
        if quantity is not None:
            changes["qty"] = quantity
        if limit_price is not None:
            changes["price"] = limit_price
        if stop_price is not None:
            changes["trigger_price"] = stop_price

        async def send() -> None:
            await client.modify_order(order=current, **changes)

        self._jobs.put_nowait(send)

    def cancel(self, client_order_id: str) -> None:
        """Send `RequestCancelOrder`; `OrderCancelled` follows from the notifications."""
        self._require_session()
        o = self._working(client_order_id)
        o.cancel_reason = o.cancel_reason or "requested"
        self._send_cancel(o)

    def _send_cancel(self, o: _Order) -> None:
        client = self._require_session()
        account = self.account_id

        async def send() -> None:
            await client.cancel_order(basket_id=o.basket_id, account_id=account)

        self._jobs.put_nowait(send)

    def cancel_all(self, symbol: str | None = None) -> None:
        """Cancel every working order (of one symbol)."""
        self._require_session()
        for o in list(self._orders.values()):
            if o.accepted and not o.done and o.basket_id and (symbol is None or o.symbol == symbol):
                o.cancel_reason = o.cancel_reason or "cancel_all"
                self._send_cancel(o)

    def flatten(self, symbol: str | None = None, reason: str = "requested") -> None:
        """Cancel working orders, then close each position with a market `RequestNewOrder`.

        Until the next bracket of a symbol, what races the flatten is flattened too: an
        order accepted after it is cancelled, and a fill that leaves a position (an entry
        filled as it was cancelled, a closing order sized before a stop filled) gets a
        new closing order once no other is on its way.
        """
        client = self._require_session()
        for s in self.instruments if symbol is None else (symbol,):
            self._flattening[s] = reason
        for o in list(self._orders.values()):
            mine = symbol is None or o.symbol == symbol
            if mine and o.accepted and not o.done and o.basket_id and not o.cancel_reason:
                o.cancel_reason = reason
                self._send_cancel(o)
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
            self._place(o, self._closing_order(client, o))

    def _after_flatten_news(self, o: _Order) -> None:
        reason = self._flattening.get(o.symbol)
        if reason is None or not self.connected:
            return
        if (
            o.accepted
            and not o.done
            and o.basket_id
            and o.role != "flatten"
            and not o.cancel_reason
        ):
            o.cancel_reason = reason
            self._send_cancel(o)
        if o.done and o.role in ("entry", "flatten", "stop", "target"):
            asyncio.get_running_loop().call_soon(self._flatten_rest, o.symbol, reason)

    def _flatten_rest(self, symbol: str, reason: str) -> None:
        """Close what a flatten left open, unless a closing order is still on its way."""
        busy = any(
            x.role == "flatten" and not x.done and x.symbol == symbol for x in self._orders.values()
        )
        held = any(p.symbol == symbol for p in self.positions())
        if self._flattening.get(symbol) == reason and self.connected and not busy and held:
            self.flatten(symbol, reason)

    def _closing_order(
        self, client: RithmicClient, o: _Order
    ) -> Callable[[], Awaitable[list[Any]]]:
        code, account = self.contracts[o.symbol], self.account_id
        side = TransactionType.SELL if o.side == "sell" else TransactionType.BUY

        def send() -> Awaitable[list[Any]]:
            return client.submit_order(  # type: ignore[no-any-return]
                o.client_order_id,
                code,
                self.config.exchange,
                o.quantity,
                side,
                OrderType.MARKET,
                account_id=account,
            )

        return send
