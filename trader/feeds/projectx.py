"""Live bars from the ProjectX Gateway's market hub: trades aggregated to 1-minute bars.

`--feed projectx` logs in with the `PROJECTX_*` settings, finds each symbol's front
contract, opens the market hub (`PROJECTX_MARKET_HUB_URL`; SignalR through
`signalrcore`, as the user hub) and subscribes `SubscribeContractTrades`. Each
`GatewayTrade` record (`price`, `volume`, `timestamp`) goes into its minute; a
minute is yielded on its last second's trade or on the first trade of a later
minute (`ts_s` = the minute's close). Bad trades (non finite or non-positive
price, negative volume, an unreadable timestamp, a time before the minute being
built) are skipped and counted by reason, as the file feeds do with `--skip-bad`;
a lost session is logged in and resubscribed. A hub that stays open with nothing
received for `PROJECTX_SILENCE_TIMEOUT_S` (the hub's pings and the answers to ours
keep it alive without trades; `trader.venues.projectx_watch`) is closed, counted
in `silences`, logged in and resubscribed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from projectx_sdk import ProjectXClient
from signalrcore.hub_connection_builder import HubConnectionBuilder

from features.rolls import contract_code, front_month
from infra.settings import Settings
from trader.core.bar import MarketBar
from trader.feeds.base import Feed
from trader.feeds.minutes import MinuteTrades
from trader.venues.projectx_config import ProjectxVenueSettings, login_key, stop_hub_quietly
from trader.venues.projectx_watch import HubWatch

__all__ = ["MinuteTrades", "ProjectxFeed", "bad_trade_reason"]

log = logging.getLogger(__name__)


def bad_trade_reason(trade: Any, minute_start: int | None, last_s: int | None) -> str | None:
    """Return why a `GatewayTrade` record is unusable, or None."""
    if not isinstance(trade, dict):
        return "not a trade record"
    try:
        price, volume = float(trade["price"]), float(trade.get("volume") or 0)
        t_s = _epoch_s(str(trade["timestamp"]))
    except (KeyError, TypeError, ValueError):
        return "missing or unreadable price, volume or timestamp"
    if not (math.isfinite(price) and price > 0):
        return "non-positive or non-finite price"
    if not math.isfinite(volume) or volume < 0:
        return "bad volume"
    if (minute_start is not None and t_s < minute_start) or (last_s is not None and t_s < last_s):
        return "timestamp out of order"
    return None


def _epoch_s(text: str) -> int:
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int((ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp())


class ProjectxFeed(Feed):
    """Minutes built from the market hub's trades (see the module docstring)."""

    source = "live"
    live = True

    def __init__(
        self,
        symbols: tuple[str, ...],
        config: ProjectxVenueSettings,
        *,
        retry_s: float = 1.0,
    ) -> None:
        super().__init__(f"projectx:{config.api_url}")
        self.symbols = symbols
        self.config = config
        self.retry_s = retry_s
        self.connected = False
        self._minutes = MinuteTrades()
        self._last: dict[str, int] = {}
        self._symbol_of: dict[str, str] = {}
        self._queue: asyncio.Queue[MarketBar | None] = asyncio.Queue()
        self._lost = asyncio.Event()
        self._hub: Any = None
        self._watch: asyncio.Task[None] | None = None  # the hub's silence watch
        self._closed = False
        #: sessions closed because the market hub went silent (`projectx_watch`)
        self.silences = 0

    @classmethod
    def from_settings(cls, settings: Settings, symbols: tuple[str, ...]) -> ProjectxFeed:
        """Return the feed at the Gateway of the `PROJECTX_*` settings."""
        return cls(symbols, ProjectxVenueSettings.from_settings(settings))

    async def _subscribe(self) -> None:
        c = self.config
        token = await asyncio.to_thread(
            login_key, c.api_url, c.username, c.api_key, c.request_timeout_s
        )
        client = ProjectXClient(base_url=c.api_url.rstrip("/"), token=token)
        year, month = front_month(datetime.now(UTC).date())
        wanted: dict[str, str] = {}
        for symbol in self.symbols:
            code = contract_code(symbol, year, month)
            found = await asyncio.to_thread(client.contracts.search, symbol, False)
            match = next((x for x in found if x.name == code), None)
            if match is None:
                log.warning("projectx feed: no contract %s for %s", code, symbol)
                continue
            wanted[match.id] = symbol
        self._symbol_of = wanted
        loop = asyncio.get_running_loop()
        opened = asyncio.Event()

        def post(fn: Callable[..., None], *args: Any) -> None:
            loop.call_soon_threadsafe(fn, *args)

        hub = (
            HubConnectionBuilder()
            .with_url(
                f"{c.market_hub_url}?access_token={token}",
                options={"skip_negotiation": True, "access_token_factory": lambda: token},
            )
            .build()
        )
        hub.on_open(lambda: post(opened.set))
        hub.on_close(lambda: post(self._on_closed, hub))
        hub.on("GatewayTrade", lambda args: post(self._on_trades, args))
        watch = HubWatch(hub, "market", c.silence_timeout_s, c.keepalive_s)
        self._hub = hub
        hub.start()
        await asyncio.wait_for(opened.wait(), c.connect_timeout_s)
        for contract_id in wanted:
            hub.send("SubscribeContractTrades", [contract_id])
        self._watch = asyncio.create_task(watch.run(c.watch_s, lambda: self._on_silent(hub)))
        self.connected = True

    def _on_silent(self, hub: Any) -> None:
        if hub is self._hub:
            self.silences += 1
            self._on_closed(hub)

    def _on_closed(self, hub: Any) -> None:
        if hub is self._hub:
            self.connected = False
            self._lost.set()

    def _on_trades(self, args: list[Any]) -> None:
        if not isinstance(args, list) or len(args) < 2 or not isinstance(args[1], list):
            self.stats.skip("malformed GatewayTrade")
            return
        symbol = self._symbol_of.get(str(args[0]))
        if symbol is None:
            return
        for trade in args[1]:
            reason = bad_trade_reason(trade, self._minutes.start_of(symbol), self._last.get(symbol))
            if reason is not None:
                self.stats.skip(reason)
                log.warning("projectx feed: skipped a %s trade %r: %s", symbol, trade, reason)
                continue
            t_s = _epoch_s(str(trade["timestamp"]))
            self._last[symbol] = t_s
            for minute in self._minutes.push(
                symbol, t_s, float(trade["price"]), float(trade.get("volume") or 0)
            ):
                self.stats.bars += 1
                self.stats.last_ts_s = minute.ts_s
                self._queue.put_nowait(minute)

    async def aiter(self) -> AsyncIterator[MarketBar]:
        keeper = asyncio.create_task(self._keep_session())
        try:
            while True:
                bar = await self._queue.get()
                if bar is None:
                    return
                yield bar
        finally:
            keeper.cancel()
            self._drop_hub()

    async def _keep_session(self) -> None:
        """Log in and subscribe; after a loss, retry every `retry_s` until back."""
        while not self._closed:
            self._lost.clear()
            try:
                await self._subscribe()
            except Exception as exc:  # any failure to reach the Gateway: retry
                log.warning("projectx feed: Gateway not reachable: %s", exc)
                self._drop_hub()
                await asyncio.sleep(self.retry_s)  # retry interval
                continue
            await self._lost.wait()
            self._drop_hub()

    def _drop_hub(self) -> None:
        hub, self._hub = self._hub, None
        self.connected = False
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if hub is not None:
            stop_hub_quietly(hub)

    async def aclose(self) -> None:
        self._closed = True
        self._drop_hub()
        self._queue.put_nowait(None)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "connected": self.connected, "silences": self.silences}
