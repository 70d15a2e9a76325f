"""A local Rithmic gateway: order, PnL and ticker plants over R|Protocol, matching with the paper model.

Clients reach it as they reach Rithmic (`RITHMIC_URL`, a TLS websocket; see
`rithmic_wire`). The order plant answers `RequestLoginInfo` (300), the account
list (302), trade routes (310), order and bracket update subscriptions (308,
336), `RequestBracketOrder` (330), `RequestNewOrder` (312: a market order closing
a whole position), modify (314), cancel (316), cancel all (346), show orders
(320: working orders as `ExchangeOrderNotification` snapshots), the order history
summary of a date (324: all its orders) and the fill history (3512). The PnL plant
answers position snapshots (402: `InstrumentPnLPositionUpdate` per position and
one `AccountPnLPositionUpdate`) and subscriptions (400). The ticker plant answers
the front month contract (113) and market data subscriptions (100), and streams
`LastTrade` (150) for every bar given to `publish_bar`.

Orders are matched by the paper venue (`trader.venues.paper.PaperVenue`) on the
bars given to `on_bar`: a bracket (stop and target in ticks) becomes one paper
bracket; once its entry fills the gateway places the stop (`STOP_MARKET`) and the
target (`LIMIT`) as orders of their own, with the entry's `user_tag`, the entry's
basket as `original_basket_id` and each other's as `linked_basket_ids`. Every
step goes to the subscribed order plant sessions as `RithmicOrderNotification`
(351: `ORDER_RCVD_FROM_CLNT`, `OPEN`, `MODIFIED`, `COMPLETE` with
`completion_reason` Fill, Cancel, Reject or Expire) and `ExchangeOrderNotification`
(352: `STATUS`, `MODIFY`, `FILL`, `CANCEL`, `REJECT`); each fill updates the
PnL plant's subscribers. Orders, fills and positions live here, so they survive
client disconnects and gateway restarts.

Fault switches: `reject_next`, `partial_fills`, `delay_ms` (slow answers),
`drop_clients` (disconnect), `restart_gateway` and `silence` / `speak` (plants
whose websockets stay open but answer nothing, heartbeats included; the market
and the orders go on meanwhile).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from features.rolls import QUARTERLY_ROOTS, contract_code, front_month
from trader.core.bar import MarketBar
from trader.core.instruments import Instrument
from trader.venues.base import BracketOrder, SessionState, VenueError
from trader.venues.paper import PaperVenue, PaperVenueSettings
from trader.venues.sims.rithmic_book import (
    BUY,
    LIMIT,
    MARKET,
    NOTIFY,
    NOTIFY_EXCH,
    SELL,
    STOP_MARKET,
    TARGET_AND_STOP_STATIC,
    RithmicBook,
    SimOrder,
)
from trader.venues.sims.rithmic_ticker import RithmicTicker
from trader.venues.sims.rithmic_wire import (
    PlantSession,
    RithmicGateway,
    message,
    now_ssboe,
)

__all__ = ["RithmicSimulator", "SimOrder"]

log = logging.getLogger(__name__)


class RithmicSimulator(RithmicTicker, RithmicBook):
    """A Rithmic gateway on loopback (see the module docstring)."""

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        *,
        user: str = "sim-trader",
        password: str = "sim-password",
        system: str = "Rithmic Paper Trading",
        account_id: str = "SIM-RT-1",
        host: str = "127.0.0.1",
        port: int = 0,
        slippage_ticks: float = 1.0,
        commission_per_contract_usd: float = 2.25,
        exchange: str = "CME",
        tls_dir: Path | None = None,
        today: date | None = None,
        heartbeat_interval_s: float = 60.0,
    ) -> None:
        self.user, self.password, self.system = user, password, system
        self.account_id, self.exchange = account_id, exchange
        self.trade_route = "simulator"
        self._tmp = None if tls_dir else tempfile.TemporaryDirectory(prefix="rithmic-sim-")
        systems = ["Rithmic 01", "Rithmic Test", "Rithmic Paper Trading", "TopstepTrader", "Apex"]
        if system not in systems:
            systems.append(system)
        self.gateway = RithmicGateway(
            host=host,
            port=port,
            tls_dir=tls_dir or Path(self._tmp.name),  # type: ignore[union-attr]
            users={user: password},
            systems=systems,
            heartbeat_interval_s=heartbeat_interval_s,
        )
        self.instruments = dict(instruments)
        year, month = front_month(today or datetime.now(UTC).date())
        #: symbol -> contract code (ESZ6)
        self.contracts = {
            s: contract_code(s, year, month) for s in self.instruments if s in QUARTERLY_ROOTS
        }
        self._symbol_of = {c: s for s, c in self.contracts.items()}
        self.commission = commission_per_contract_usd
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
        self.orders: dict[str, SimOrder] = {}  # basket id -> order
        self.fills: list[Any] = []  # ResponseShowFillHistory rows
        self._by_cid: dict[str, str] = {}  # paper client order id -> basket id
        self._baskets = itertools.count(1_000_001)
        self._fill_ids = itertools.count(7_000_001)
        self._reject: list[str] = []
        self._flatten_into: str = ""  # the basket of the closing order being placed
        self._day_fills: dict[str, list[int]] = {}  # symbol -> [bought, sold]
        self.net: dict[str, list[float]] = {}
        self._register()

    # server --------------------------------------------------------------

    @property
    def url(self) -> str:
        """Return the gateway's URL (`RITHMIC_URL`)."""
        return self.gateway.url

    @property
    def ca_file(self) -> Path:
        """Return the CA certificate the gateway's TLS certificate chains to (`RITHMIC_CA_FILE`)."""
        return self.gateway.ca_file

    @property
    def port(self) -> int:
        """Return the port the gateway listens on."""
        return self.gateway.port

    @property
    def listening(self) -> bool:
        """Say whether the gateway accepts connections."""
        return self.gateway.listening

    async def start(self) -> None:
        """Listen (port 0 picks a free one, kept across restarts)."""
        await self.gateway.start()

    async def stop(self) -> None:
        """Close every session and stop listening."""
        await self.gateway.stop()

    def close(self) -> None:
        """Remove the TLS files written for this simulator."""
        if self._tmp is not None:
            self._tmp.cleanup()

    async def drop_clients(self) -> None:
        """Cut every session as a network failure would (orders keep working)."""
        await self.gateway.drop()

    async def restart_gateway(self, down_s: float = 0.5) -> None:
        """Stop the gateway, stay down `down_s` seconds (refusing connections), start again."""
        await self.stop()
        await asyncio.sleep(down_s)  # the gateway's downtime, not a synchronisation
        await self.start()

    def sessions(self, plant: str) -> int:
        """Return the number of sessions logged in to `plant` (`order`, `pnl`, `ticker`)."""
        return sum(1 for s in self.gateway.sessions if s.plant_name == plant)

    # fault switches ------------------------------------------------------

    @property
    def delay_ms(self) -> int:
        """Return the delay before each request is handled (a slow gateway)."""
        return self.gateway.delay_ms

    @delay_ms.setter
    def delay_ms(self, value: int) -> None:
        self.gateway.delay_ms = value

    def silence(self, *plants: str) -> None:
        """Stop answering on `plants` (all by default), websockets left open, until `speak`."""
        self.gateway.silent.update(plants or ("order", "pnl", "ticker"))

    def speak(self) -> None:
        """Answer again on every plant (new requests; what was dropped stays lost)."""
        self.gateway.silent.clear()

    def reject_next(self, reason: str = "simulated rejection") -> None:
        """Reject the next bracket order with `reason` (the request itself is acknowledged)."""
        self._reject.append(reason)

    def partial_fills(self, max_per_bar: int | None) -> None:
        """Fill entries at most `max_per_bar` contracts per bar (None: all at once)."""
        self.paper.config = self.paper.config.model_copy(update={"max_fill_per_bar": max_per_bar})

    # the market ----------------------------------------------------------

    def on_bar(self, bar: MarketBar, session: SessionState) -> None:
        """Match working orders against one bar."""
        self.paper.on_bar(bar, session)

    # requests --------------------------------------------------------------

    def _register(self) -> None:
        h = self.gateway.handlers
        h.update(
            {
                300: self._login_info,
                302: self._accounts,
                310: self._trade_routes,
                308: self._subscribe_orders,
                336: self._subscribe_brackets,
                330: self._bracket,
                312: self._new_order,
                314: self._modify,
                316: self._cancel,
                346: self._cancel_all,
                320: self._show_orders,
                324: self._order_history,
                3512: self._fill_history,
                400: self._pnl_subscribe,
                402: self._pnl_snapshot,
                113: self._front_month,
                100: self._market_data,
            }
        )

    def _check_account(self, rq: Any) -> None:
        if rq.account_id != self.account_id:
            raise ValueError(f"unknown account {rq.account_id!r}")

    def _login_info(self, s: PlantSession, rq: Any) -> None:
        s.send(
            message(
                301,
                user_msg=list(rq.user_msg),
                rp_code=["0"],
                fcm_id=self.gateway.fcm_id,
                ib_id=self.gateway.ib_id,
                user=s.user,
                first_name="Sim",
                last_name="Trader",
                user_type=3,
                order_copy_status="disabled",
                country_code="US",
                state_code="IL",
            )
        )

    def _accounts(self, s: PlantSession, rq: Any) -> None:
        echo = list(rq.user_msg)
        s.send(
            message(
                303,
                user_msg=echo,
                rq_handler_rp_code=["0"],
                account_id=self.account_id,
                account_name=self.account_id,
                account_currency="USD",
                account_auto_liquidate="enabled",
                **self._ids(),
            ),
            message(303, user_msg=echo, rp_code=["0"]),
        )

    def _trade_routes(self, s: PlantSession, rq: Any) -> None:
        echo = list(rq.user_msg)
        s.send(
            message(
                311,
                user_msg=echo,
                rq_handler_rp_code=["0"],
                exchange=self.exchange,
                trade_route=self.trade_route,
                status="UP",
                is_default=True,
                **self._ids(),
            ),
            message(311, user_msg=echo, rp_code=["0"]),
        )

    def _subscribe_orders(self, s: PlantSession, rq: Any) -> None:
        self._check_account(rq)
        s.order_updates.add(rq.account_id)
        s.send(message(309, user_msg=list(rq.user_msg), rp_code=["0"]))

    def _subscribe_brackets(self, s: PlantSession, rq: Any) -> None:
        self._check_account(rq)
        s.send(message(337, user_msg=list(rq.user_msg), rp_code=["0"]))

    def _new_basket(self, rq: Any, price_type: int, **more: Any) -> SimOrder:
        o = SimOrder(
            basket_id=str(next(self._baskets)),
            user_tag=rq.user_tag,
            symbol=self._symbol_of[rq.symbol],
            side=int(rq.transaction_type),
            quantity=int(rq.quantity),
            price_type=price_type,
            price=float(rq.price),
            trigger_price=float(rq.trigger_price),
            **more,
        )
        self.orders[o.basket_id] = o
        return o

    def _check_order(self, rq: Any) -> None:
        self._check_account(rq)
        if rq.trade_route != self.trade_route or rq.exchange != self.exchange:
            raise ValueError(f"no trade route {rq.trade_route!r} to {rq.exchange!r}")
        if rq.symbol not in self._symbol_of:
            raise ValueError(f"unknown symbol {rq.symbol!r} on {rq.exchange}")
        if rq.quantity <= 0 or rq.transaction_type not in (BUY, SELL):
            raise ValueError("quantity must be > 0 and transaction_type BUY or SELL")

    def _bracket(self, s: PlantSession, rq: Any) -> None:
        self._check_order(rq)
        if rq.price_type not in (MARKET, LIMIT) or rq.bracket_type != TARGET_AND_STOP_STATIC:
            raise ValueError(
                "this gateway takes MARKET or LIMIT entries with TARGET_AND_STOP_STATIC"
            )
        if rq.stop_ticks <= 0 or rq.target_ticks <= 0:
            raise ValueError("stop_ticks and target_ticks must be > 0")
        o = self._new_basket(rq, int(rq.price_type), bracket_type=TARGET_AND_STOP_STATIC)
        ssboe, usecs = now_ssboe()
        s.send(
            message(
                331,
                user_msg=list(rq.user_msg),
                user_tag=rq.user_tag,
                rp_code=["0"],
                basket_id=o.basket_id,
                ssboe=ssboe,
                usecs=usecs,
            )
        )
        cid = f"b{o.basket_id}"
        self._by_cid[cid] = o.basket_id
        self._notify(o, NOTIFY["received"], status="received")
        if self._reject:
            self._rejected(o, self._reject.pop(0))
            return
        tick = self.instruments[o.symbol].tick_size
        self.paper.submit_bracket(
            BracketOrder(
                client_order_id=cid,
                symbol=o.symbol,
                side="buy" if o.side == BUY else "sell",
                quantity=o.quantity,
                stop_distance=int(rq.stop_ticks) * tick,
                target_distance=int(rq.target_ticks) * tick,
                entry_type="limit" if o.price_type == LIMIT else "market",
                limit_price=o.price if o.price_type == LIMIT else None,
            )
        )

    def _new_order(self, s: PlantSession, rq: Any) -> None:
        self._check_order(rq)
        symbol = self._symbol_of[rq.symbol]
        held = {p.symbol: p.quantity for p in self.paper.positions()}.get(symbol, 0)
        closing = -rq.quantity if rq.transaction_type == SELL else rq.quantity
        if rq.price_type != MARKET or not held or closing != -held:
            raise ValueError(
                "this gateway takes bracket orders and market orders closing a position"
            )
        o = self._new_basket(rq, MARKET)
        ssboe, usecs = now_ssboe()
        s.send(
            message(
                313,
                user_msg=list(rq.user_msg),
                user_tag=rq.user_tag,
                rp_code=["0"],
                basket_id=o.basket_id,
                ssboe=ssboe,
                usecs=usecs,
            )
        )
        self._notify(o, NOTIFY["received"], status="received")
        self._flatten_into = o.basket_id
        try:
            self.paper.flatten(symbol, reason="closing order")
        finally:
            self._flatten_into = ""

    def _working(self, rq: Any) -> tuple[SimOrder, str]:
        self._check_account(rq)
        o = self.orders.get(rq.basket_id)
        cid = next((c for c, b in self._by_cid.items() if o and b == o.basket_id), "")
        if o is None or o.status != "open" or not cid:
            raise ValueError(f"no working order with basket id {rq.basket_id!r}")
        return o, cid

    def _modify(self, s: PlantSession, rq: Any) -> None:
        o, cid = self._working(rq)
        echo = list(rq.user_msg)
        changes: dict[str, Any] = {}
        if rq.quantity and rq.quantity != o.quantity:
            changes["quantity"] = int(rq.quantity)
        if o.price_type == STOP_MARKET and rq.trigger_price and rq.trigger_price != o.trigger_price:
            changes["stop_price"] = float(rq.trigger_price)
        if o.price_type == LIMIT and rq.price and rq.price != o.price:
            changes["limit_price"] = float(rq.price)
        ssboe, usecs = now_ssboe()
        s.send(
            message(
                315, user_msg=echo, rp_code=["0"], basket_id=o.basket_id, ssboe=ssboe, usecs=usecs
            )
        )
        try:
            self.paper.modify(cid, **changes)
        except VenueError as exc:
            self._notify(o, NOTIFY["modify_failed"], status="open", text=str(exc))

    def _cancel(self, s: PlantSession, rq: Any) -> None:
        o, cid = self._working(rq)
        ssboe, usecs = now_ssboe()
        s.send(
            message(
                317,
                user_msg=list(rq.user_msg),
                rp_code=["0"],
                basket_id=o.basket_id,
                ssboe=ssboe,
                usecs=usecs,
            )
        )
        self.paper.cancel(cid)

    def _cancel_all(self, s: PlantSession, rq: Any) -> None:
        self._check_account(rq)
        s.send(message(347, user_msg=list(rq.user_msg), rp_code=["0"]))
        self.paper.cancel_all()

    def _show_orders(self, s: PlantSession, rq: Any) -> None:
        self._check_account(rq)
        working = [o for o in self.orders.values() if o.status == "open"]
        s.send(*(self._exchange(o, NOTIFY_EXCH["status"], is_snapshot=True) for o in working))
        s.send(message(321, user_msg=list(rq.user_msg), rp_code=["0"]))

    def _order_history(self, s: PlantSession, rq: Any) -> None:
        self._check_account(rq)
        day = datetime.strptime(rq.date, "%Y%m%d").date()
        those = [o for o in self.orders.values() if o.created == day]
        s.send(*(self._exchange(o, NOTIFY_EXCH["status"], is_snapshot=True) for o in those))
        s.send(message(325, user_msg=list(rq.user_msg), rp_code=["0"]))

    def _fill_history(self, s: PlantSession, rq: Any) -> None:
        self._check_account(rq)
        echo = list(rq.user_msg)
        rows = [f for f in self.fills if rq.start_index <= f.ssboe <= rq.finish_index]
        for f in rows:
            row = type(f)()
            row.CopyFrom(f)
            row.user_msg.extend(echo)
            s.send(row)
        s.send(message(3513, user_msg=echo, rp_code=["0"]))

    def _pnl_subscribe(self, s: PlantSession, rq: Any) -> None:
        self._check_account(rq)
        if rq.request == 1:
            s.pnl_updates.add(rq.account_id)
        else:
            s.pnl_updates.discard(rq.account_id)
        s.send(message(401, user_msg=list(rq.user_msg), rp_code=["0"]))

    def _pnl_snapshot(self, s: PlantSession, rq: Any) -> None:
        self._check_account(rq)
        held = {sym for sym, (q, _) in self.net.items() if q}
        s.send(*(self._instrument_pnl(sym, is_snapshot=True) for sym in sorted(held)))
        s.send(self._account_pnl(is_snapshot=True))
        s.send(message(403, user_msg=list(rq.user_msg), rp_code=["0"]))
