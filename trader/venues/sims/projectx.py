"""A local ProjectX Gateway (TopstepX): its REST API and real-time user hub over the paper fill model.

Clients reach it over loopback exactly as the hosted Gateway: JSON `POST
/api/...` with a bearer token from `/api/Auth/loginKey` (answers carry `success`,
`errorCode`, `errorMessage`), and the user hub at `/hubs/user?access_token=...`,
SignalR's JSON hub protocol over a websocket (records end with 0x1E; a handshake
`{"protocol":"json","version":1}` answered by `{}`; `SubscribeOrders`,
`SubscribePositions`, `SubscribeTrades`, `SubscribeAccounts` invocations; pings
echoed; `GatewayUserOrder`, `GatewayUserTrade`, `GatewayUserPosition` pushed as
`{"action": 1, "data": {...}}`). `POST /hubs/user/negotiate` answers for clients
that negotiate first.

Orders are matched by the paper venue (`trader.venues.paper.PaperVenue`) on the
bars given to `on_bar`: an `/api/Order/place` with `stopLossBracket` and
`takeProfitBracket` (distances in ticks) becomes one paper bracket, whose stop and
target the Gateway places as its own orders once the entry fills (no
`customTag`); `/api/Position/closeContract` and a market order against the whole
position become the paper venue's flatten. Order state, trades and positions live
here, so they survive client disconnects and gateway restarts.

Fault switches: `reject_next`, `partial_fills`, `delay_ms` (slow answers),
`drop_clients` (disconnect) and `restart_gateway`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web

from features.rolls import QUARTERLY_ROOTS, contract_code, front_month
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
from trader.venues.base import BracketOrder, SessionState, VenueError
from trader.venues.paper import PaperVenue, PaperVenueSettings
from trader.venues.sims.projectx_hub import RS, SignalrHub

__all__ = ["RS", "STATUS", "ProjectxSimulator", "contract_id_of"]

log = logging.getLogger(__name__)

#: ProjectX OrderStatus
STATUS = {"open": 1, "filled": 2, "cancelled": 3, "expired": 4, "rejected": 5, "pending": 6}
TYPE_LIMIT, TYPE_MARKET, TYPE_STOP = 1, 2, 4
SIDE_BUY, SIDE_SELL = 0, 1
_SYMBOL_IDS = {"ES": "EP", "NQ": "ENQ", "MES": "MES", "MNQ": "MNQ"}

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def contract_id_of(symbol: str, code: str) -> str:
    """Return the Gateway's contract id of a contract code, e.g. `CON.F.US.EP.Z24` for `ESZ4`."""
    return f"CON.F.US.{_SYMBOL_IDS.get(symbol, symbol)}.{code[-2]}{code[-1]}"


def _ts(dt: datetime | None = None) -> str:
    return (dt or datetime.now(UTC)).isoformat()


class ProjectxSimulator:
    """The ProjectX Gateway's REST API and user hub on loopback, matching with the paper model."""

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        *,
        username: str = "sim-trader",
        api_key: str = "sim-api-key",
        account_name: str = "SIM-50K-1",
        account_id: int = 7001,
        host: str = "127.0.0.1",
        port: int = 0,
        slippage_ticks: float = 1.0,
        commission_per_contract_usd: float = 2.1,
        today: date | None = None,
    ) -> None:
        self.username, self.api_key = username, api_key
        self.account = {"id": account_id, "name": account_name, "balance": 50_000.0}
        self.host, self.port = host, port
        self.delay_ms = 0
        self.instruments = dict(instruments)
        year, month = front_month(today or datetime.now(UTC).date())
        #: symbol -> the Gateway's contract record
        self.contracts = {
            s: {
                "id": contract_id_of(s, code := contract_code(s, year, month)),
                "name": code,
                "description": f"{s} {code}",
                "tickSize": inst.tick_size,
                "tickValue": inst.tick_value_usd,
                "activeContract": True,
                "symbolId": f"F.US.{_SYMBOL_IDS.get(s, s)}",
            }
            for s, inst in self.instruments.items()
            if s in QUARTERLY_ROOTS
        }
        self._symbol_of = {c["id"]: s for s, c in self.contracts.items()}
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
        self.orders: dict[int, dict[str, Any]] = {}
        self.trades: list[dict[str, Any]] = []
        self._by_cid: dict[str, int] = {}
        self._ids = itertools.count(9_000_001)
        self._trade_ids = itertools.count(5_000_001)
        self._tokens: set[str] = set()
        self._reject: list[str] = []
        self.user_hub = SignalrHub(self._tokens)
        self.market_hub = SignalrHub(self._tokens)
        self._runner: web.AppRunner | None = None
        self.logins = 0

    # server --------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application()
        routes: dict[str, Handler] = {
            "Auth/loginKey": self._login,
            "Auth/validate": self._validate,
            "Account/search": self._accounts,
            "Contract/search": self._contract_search,
            "Contract/searchById": self._contract_by_id,
            "Order/place": self._place,
            "Order/cancel": self._cancel,
            "Order/modify": self._modify,
            "Order/search": self._order_search,
            "Order/searchOpen": self._order_search_open,
            "Position/searchOpen": self._positions,
            "Position/closeContract": self._close_contract,
            "Trade/search": self._trade_search,
        }
        for path, handler in routes.items():
            app.router.add_post(
                f"/api/{path}", self._rest(handler, auth=not path.startswith("Auth/l"))
            )
        app.router.add_post("/hubs/user/negotiate", self._negotiate)
        app.router.add_post("/hubs/market/negotiate", self._negotiate)
        app.router.add_get("/hubs/user", self.user_hub.serve)
        app.router.add_get("/hubs/market", self.market_hub.serve)
        return app

    async def start(self) -> None:
        """Listen on `host:port` (port 0 picks a free one, kept across restarts)."""
        self._runner = web.AppRunner(self._app(), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Close every hub session and stop listening."""
        await self.drop_clients()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def drop_clients(self) -> None:
        """Close every user-hub connection (orders keep working)."""
        await self.user_hub.drop()
        await self.market_hub.drop()

    async def restart_gateway(self, down_s: float = 0.5) -> None:
        """Stop the gateway, stay down `down_s` seconds (refusing connections), start again."""
        await self.stop()
        await asyncio.sleep(down_s)  # the gateway's downtime, not a synchronisation
        await self.start()

    @property
    def listening(self) -> bool:
        """Say whether the gateway accepts connections."""
        return self._runner is not None

    @property
    def url(self) -> str:
        """Return the REST base URL (`PROJECTX_API_URL`)."""
        return f"http://{self.host}:{self.port}"

    @property
    def hub_clients(self) -> int:
        """Return the number of subscribed user-hub sessions."""
        return self.user_hub.subscribed

    # fault switches ------------------------------------------------------

    def reject_next(self, reason: str = "simulated rejection") -> None:
        """Refuse the next `/api/Order/place` with `reason`."""
        self._reject.append(reason)

    def partial_fills(self, max_per_bar: int | None) -> None:
        """Fill entries at most `max_per_bar` contracts per bar (None: all at once)."""
        self.paper.config = self.paper.config.model_copy(update={"max_fill_per_bar": max_per_bar})

    # the market ----------------------------------------------------------

    def on_bar(self, bar: MarketBar, session: SessionState) -> None:
        """Match working orders against one bar."""
        self.paper.on_bar(bar, session)

    # REST ----------------------------------------------------------------

    def _rest(
        self, handler: Handler, *, auth: bool
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            if auth:
                token = request.headers.get("Authorization", "").removeprefix("Bearer ")
                if token not in self._tokens:
                    return web.Response(status=401)
            if self.delay_ms:
                await asyncio.sleep(self.delay_ms / 1000)  # a slow gateway
            try:
                body = await request.json()
                if not isinstance(body, dict):
                    raise ValueError("the body is not a JSON object")
                answer = await handler(body)
            except (ValueError, KeyError, TypeError, VenueError) as exc:
                answer = {"errorCode": 1, "errorMessage": f"{type(exc).__name__}: {exc}"}
            ok = not answer.get("errorCode")
            return web.json_response(
                {"success": ok, "errorCode": 0, "errorMessage": None, **answer}
            )

        return serve

    async def _login(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("userName") != self.username or body.get("apiKey") != self.api_key:
            return {"errorCode": 3, "errorMessage": "invalid credentials", "token": None}
        token = secrets.token_urlsafe(24)
        self._tokens.add(token)
        self.logins += 1
        return {"token": token}

    async def _validate(self, body: dict[str, Any]) -> dict[str, Any]:
        token = secrets.token_urlsafe(24)
        self._tokens.add(token)
        return {"newToken": token}

    async def _accounts(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "accounts": [{**self.account, "canTrade": True, "isVisible": True, "simulated": True}]
        }

    async def _contract_search(self, body: dict[str, Any]) -> dict[str, Any]:
        text = str(body.get("searchText", "")).upper()
        return {"contracts": [c for c in self.contracts.values() if text in str(c["name"])]}

    async def _contract_by_id(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"contracts": [c for c in self.contracts.values() if c["id"] == body["contractId"]]}

    def _check_account(self, body: dict[str, Any]) -> None:
        if body.get("accountId") != self.account["id"]:
            raise ValueError(f"unknown account {body.get('accountId')!r}")

    def _new_order(self, body: dict[str, Any], cid: str, tag: str | None) -> dict[str, Any]:
        oid = next(self._ids)
        symbol = self._symbol_of[body["contractId"]]
        order = {
            "id": oid,
            "accountId": self.account["id"],
            "contractId": body["contractId"],
            "symbolId": self.contracts[symbol]["symbolId"],
            "creationTimestamp": _ts(),
            "updateTimestamp": _ts(),
            "status": STATUS["pending"],
            "type": int(body["type"]),
            "side": int(body["side"]),
            "size": int(body["size"]),
            "limitPrice": body.get("limitPrice"),
            "stopPrice": body.get("stopPrice"),
            "fillVolume": 0,
            "filledPrice": None,
            "trailPrice": None,
            "customTag": tag,
            "linkedOrderId": None,
        }
        self.orders[oid] = order
        self._by_cid[cid] = oid
        return order

    async def _place(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_account(body)
        if self._reject:
            return {"errorCode": 2, "errorMessage": self._reject.pop(0), "orderId": None}
        symbol = self._symbol_of.get(str(body.get("contractId")))
        if symbol is None:
            return {
                "errorCode": 2,
                "errorMessage": f"contract {body.get('contractId')!r} not found",
            }
        tag = body.get("customTag")
        if tag and any(o["customTag"] == tag for o in self.orders.values()):
            return {"errorCode": 2, "errorMessage": f"customTag {tag!r} was already used"}
        kind, side, size = int(body["type"]), int(body["side"]), int(body["size"])
        sl, tp = body.get("stopLossBracket"), body.get("takeProfitBracket")
        if sl and tp and kind in (TYPE_MARKET, TYPE_LIMIT):
            tick = self.instruments[symbol].tick_size
            cid = tag or f"px-{next(self._ids)}"
            order = self._new_order(body, cid, tag)
            self.paper.submit_bracket(
                BracketOrder(
                    client_order_id=cid,
                    symbol=symbol,
                    side="buy" if side == SIDE_BUY else "sell",
                    quantity=size,
                    stop_distance=int(sl["ticks"]) * tick,
                    target_distance=int(tp["ticks"]) * tick,
                    entry_type="limit" if kind == TYPE_LIMIT else "market",
                    limit_price=body.get("limitPrice"),
                )
            )
            return {"orderId": order["id"]}
        held = {p.symbol: p.quantity for p in self.paper.positions()}.get(symbol, 0)
        closing = -size if side == SIDE_SELL else size
        if kind == TYPE_MARKET and held and closing == -held:
            self.paper.flatten(symbol, reason="closing order")
            return {"orderId": self._by_cid.get(self._last_flatten(), 0)}
        return {
            "errorCode": 2,
            "errorMessage": "this gateway takes bracketed entries and orders closing a whole position",
        }

    def _last_flatten(self) -> str:
        return next((c for c in reversed(self._by_cid) if c.endswith("-flatten")), "")

    def _order(self, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        self._check_account(body)
        order = self.orders.get(int(body["orderId"]))
        cid = next((c for c, i in self._by_cid.items() if order and i == order["id"]), "")
        if order is None or not cid or order["status"] != STATUS["open"]:
            raise ValueError(f"order {body.get('orderId')!r} is not open")
        return order, cid

    async def _cancel(self, body: dict[str, Any]) -> dict[str, Any]:
        _, cid = self._order(body)
        self.paper.cancel(cid)
        return {}

    async def _modify(self, body: dict[str, Any]) -> dict[str, Any]:
        _, cid = self._order(body)
        self.paper.modify(
            cid,
            quantity=body.get("size"),
            limit_price=body.get("limitPrice"),
            stop_price=body.get("stopPrice"),
        )
        return {}

    async def _order_search(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_account(body)
        since = datetime.fromisoformat(str(body["startTimestamp"]).replace("Z", "+00:00"))
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        orders = [
            o
            for o in self.orders.values()
            if datetime.fromisoformat(o["creationTimestamp"]) >= since
        ]
        return {"orders": [o for o in orders if o["status"] != STATUS["pending"]]}

    async def _order_search_open(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_account(body)
        return {"orders": [o for o in self.orders.values() if o["status"] == STATUS["open"]]}

    def position_records(self) -> list[dict[str, Any]]:
        """Return the account's open positions as the Gateway lists them."""
        return [
            {
                "id": 300 + i,
                "accountId": self.account["id"],
                "contractId": self.contracts[p.symbol]["id"],
                "creationTimestamp": _ts(),
                "type": 1 if p.quantity > 0 else 2,
                "size": abs(p.quantity),
                "averagePrice": p.avg_price,
            }
            for i, p in enumerate(self.paper.positions())
        ]

    async def _positions(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_account(body)
        return {"positions": self.position_records()}

    async def _close_contract(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_account(body)
        symbol = self._symbol_of.get(str(body.get("contractId")))
        if symbol is None:
            return {
                "errorCode": 2,
                "errorMessage": f"contract {body.get('contractId')!r} not found",
            }
        if not any(p.symbol == symbol for p in self.paper.positions()):
            return {"errorCode": 2, "errorMessage": f"no open position in {body['contractId']}"}
        self.paper.flatten(symbol, reason="closeContract")
        return {}

    async def _trade_search(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_account(body)
        return {"trades": list(self.trades)}

    # the user hub ----------------------------------------------------------

    async def _negotiate(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "connectionId": secrets.token_hex(8),
                "negotiateVersion": 0,
                "availableTransports": [{"transport": "WebSockets", "transferFormats": ["Text"]}],
            }
        )

    def _push(self, topic: str, target: str, data: dict[str, Any]) -> None:
        self.user_hub.push(f"{topic}:{self.account['id']}", target, [{"action": 1, "data": data}])

    def publish_bar(self, bar: MarketBar) -> None:
        """Stream a 1-minute bar to the market hub as four trades: open, high, low, close.

        They are stamped at seconds 0, 20 and 40 of the minute and at its last second,
        so a client can close the minute on the last one.
        """
        contract = self.contracts.get(bar.symbol)
        if contract is None:
            return
        start = bar.ts_s - 60
        prices = ((0, bar.open), (20, bar.high), (40, bar.low), (59, bar.close))
        volume = max(1, round(bar.volume / 4))
        trades = [
            {
                "symbolId": contract["symbolId"],
                "price": price,
                "timestamp": datetime.fromtimestamp(start + s, UTC).isoformat(),
                "type": 0,
                "volume": volume,
            }
            for s, price in prices
        ]
        self.publish_trades(bar.symbol, trades)

    def publish_trades(self, symbol: str, trades: list[dict[str, Any]]) -> None:
        """Send `GatewayTrade` records for `symbol` as given (a fault switch for bad data too)."""
        cid = self.contracts[symbol]["id"]
        self.market_hub.push(f"ContractTrades:{cid}", "GatewayTrade", [cid, trades])

    # paper events -> Gateway orders, trades, positions ----------------------

    def _on_paper(self, event: VenueEvent) -> None:
        cid = getattr(event, "client_order_id", "")
        if isinstance(event, OrderSubmitted) and cid not in self._by_cid:
            body = {
                "contractId": self.contracts[event.symbol]["id"],
                "type": {"stop": TYPE_STOP, "limit": TYPE_LIMIT}.get(event.order_type, TYPE_MARKET),
                "side": SIDE_BUY if event.side == "buy" else SIDE_SELL,
                "size": event.quantity,
                "limitPrice": event.limit_price,
                "stopPrice": event.stop_price,
            }
            self._new_order(body, cid, None)
            return
        oid = self._by_cid.get(cid)
        order = self.orders.get(oid) if oid is not None else None
        if order is None:
            return
        order["updateTimestamp"] = _ts()
        if isinstance(event, OrderAccepted):
            order.update(status=STATUS["open"], size=event.quantity)
            if event.limit_price is not None:
                order["limitPrice"] = event.limit_price
            if event.stop_price is not None:
                order["stopPrice"] = event.stop_price
        elif isinstance(event, OrderFilled):
            self._fill(order, event)
            return
        elif isinstance(event, OrderCancelled):
            order["status"] = STATUS["cancelled"]
        elif isinstance(event, OrderExpired):
            order["status"] = STATUS["expired"]
        elif isinstance(event, OrderRejected):
            order["status"] = STATUS["rejected"]
        else:
            return
        self._push("Orders", "GatewayUserOrder", order)

    def _fill(self, order: dict[str, Any], event: OrderFilled) -> None:
        before = order["fillVolume"]
        paid = (order["filledPrice"] or 0.0) * before + event.fill_price * event.quantity
        order.update(
            fillVolume=event.cumulative_quantity,
            filledPrice=paid / event.cumulative_quantity,
            status=STATUS["filled"] if event.leaves_quantity == 0 else STATUS["open"],
        )
        trade = {
            "id": next(self._trade_ids),
            "accountId": self.account["id"],
            "contractId": order["contractId"],
            "creationTimestamp": _ts(event.ts_event),
            "price": event.fill_price,
            "profitAndLoss": None,
            "fees": event.commission_usd,
            "side": order["side"],
            "size": event.quantity,
            "voided": False,
            "orderId": order["id"],
        }
        self.trades.append(trade)
        self._push("Trades", "GatewayUserTrade", trade)
        self._push("Orders", "GatewayUserOrder", order)
        held = {p["contractId"]: p for p in self.position_records()}
        position = held.get(order["contractId"]) or {
            "id": 0,
            "accountId": self.account["id"],
            "contractId": order["contractId"],
            "creationTimestamp": _ts(),
            "type": 0,
            "size": 0,
            "averagePrice": 0.0,
        }
        self._push("Positions", "GatewayUserPosition", position)
