"""Live bars from Rithmic's ticker plant: `LastTrade` messages aggregated to 1-minute bars.

`--feed rithmic` logs in to the ticker plant with the `RITHMIC_*` settings (a
session of its own; async_rithmic first checks `RITHMIC_SYSTEM` against the
gateway's system list), takes each symbol's contract from the roll calendar (the
one the `rithmic` venue trades; a different front month named by Rithmic's
`RequestFrontMonthContract` is logged) and subscribes its trades
(`RequestMarketDataUpdate`, `LAST_TRADE`). A minute is yielded on its last
second's trade or on the first trade of a later minute (`ts_s` = the minute's
close). Bad trades (non finite or non-positive price, negative size, a time before
the minute being built) are skipped and counted by reason, as the file feeds do
with `--skip-bad`. A lost session (the websocket closed, or open with nothing
received for `RITHMIC_SILENCE_TIMEOUT_S`: no trade and no heartbeat answer; see
`trader.venues.rithmic_watch`) is closed, logged in and resubscribed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from async_rithmic import DataType, RithmicClient
from async_rithmic.enums import SysInfraType

from features.rolls import contract_code, front_month
from infra.settings import Settings
from trader.core.bar import MarketBar
from trader.feeds.base import Feed
from trader.feeds.minutes import MinuteTrades
from trader.venues.rithmic_config import (
    RithmicVenueSettings,
    connect_plants,
    new_client,
    quiet_disconnect,
)
from trader.venues.rithmic_watch import PlantWatch

__all__ = ["RithmicFeed", "bad_tick_reason"]

log = logging.getLogger(__name__)


def bad_tick_reason(tick: Any, minute_start: int | None, last_s: int | None) -> str | None:
    """Return why a `LastTrade` (as async_rithmic hands it over) is unusable, or None."""
    try:
        price, size = float(tick["trade_price"]), float(tick.get("trade_size") or 0)
        t_s = int(tick["datetime"].timestamp())
    except (KeyError, TypeError, ValueError, AttributeError):
        return "missing or unreadable price, size or time"
    if not (math.isfinite(price) and price > 0):
        return "non-positive or non-finite price"
    if not math.isfinite(size) or size < 0:
        return "bad size"
    if (minute_start is not None and t_s < minute_start) or (last_s is not None and t_s < last_s):
        return "timestamp out of order"
    return None


class RithmicFeed(Feed):
    """Minutes built from the ticker plant's trades (see the module docstring)."""

    source = "live"
    live = True

    def __init__(
        self, symbols: tuple[str, ...], config: RithmicVenueSettings, *, retry_s: float = 1.0
    ) -> None:
        super().__init__(f"rithmic:{config.url}")
        self.symbols = symbols
        self.config = config
        self.retry_s = retry_s
        self.connected = False
        self._minutes = MinuteTrades()
        self._last: dict[str, int] = {}
        self._symbol_of: dict[str, str] = {}
        self._queue: asyncio.Queue[MarketBar | None] = asyncio.Queue()
        self._client: RithmicClient | None = None
        self._closed = False
        #: sessions closed because the ticker plant went silent (`rithmic_watch`)
        self.silences = 0

    @classmethod
    def from_settings(cls, settings: Settings, symbols: tuple[str, ...]) -> RithmicFeed:
        """Return the feed at the gateway of the `RITHMIC_*` settings."""
        return cls(symbols, RithmicVenueSettings.from_settings(settings))

    async def _subscribe(self) -> RithmicClient:
        c = self.config
        client = new_client(c)
        client.on_tick += lambda tick: self._on_tick(client, tick)
        self._client = client
        await connect_plants(client, [SysInfraType.TICKER_PLANT], c.connect_timeout_s)
        year, month = front_month(datetime.now(UTC).date())
        for symbol in self.symbols:
            code = contract_code(symbol, year, month)
            try:
                named = await client.get_front_month_contract(symbol, c.exchange)
            except Exception as exc:
                named = f"none ({exc})"
            if named != code:
                log.warning(
                    "rithmic feed: %s trades %s; Rithmic's front month is %s", symbol, code, named
                )
            self._symbol_of[code] = symbol
            await client.subscribe_to_market_data(code, c.exchange, DataType.LAST_TRADE)
        self.connected = True
        return client

    def _on_tick(self, client: RithmicClient, tick: Any) -> None:
        if client is not self._client or tick.get("data_type") != DataType.LAST_TRADE:
            return
        symbol = self._symbol_of.get(str(tick.get("symbol")))
        if symbol is None:
            return
        reason = bad_tick_reason(tick, self._minutes.start_of(symbol), self._last.get(symbol))
        if reason is not None:
            self.stats.skip(reason)
            log.warning("rithmic feed: skipped a %s trade %r: %s", symbol, tick, reason)
            return
        t_s = int(tick["datetime"].timestamp())
        self._last[symbol] = t_s
        size = float(tick.get("trade_size") or 0)
        for minute in self._minutes.push(symbol, t_s, float(tick["trade_price"]), size):
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
            await self._drop_client()

    async def _keep_session(self) -> None:
        """Log in and subscribe; after a loss, retry every `retry_s` until back."""
        while not self._closed:
            try:
                client = await self._subscribe()
            except Exception as exc:  # any failure to reach the gateway: retry
                log.warning("rithmic feed: gateway not reachable: %s", exc)
                await self._drop_client()
                await asyncio.sleep(self.retry_s)  # retry interval
                continue
            lost = None
            with PlantWatch(client, ("ticker",), self.config.silence_timeout_s) as watch:
                while not self._closed and not (lost := watch.lost("rithmic")):
                    await asyncio.sleep(self.config.watch_s)  # the websocket has no event
            if lost:
                log.warning("rithmic feed: ticker plant connection lost: %s", lost)
                self.silences += bool(lost.silent)
            await self._drop_client()

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        self.connected = False
        if client is not None:
            await quiet_disconnect(client)

    async def aclose(self) -> None:
        self._closed = True
        await self._drop_client()
        self._queue.put_nowait(None)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "connected": self.connected, "silences": self.silences}
