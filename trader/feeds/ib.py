"""Live bars from Interactive Brokers: 5-second real-time bars aggregated to 1-minute bars.

`--feed ib` connects its own read-only session (client id `IB_CLIENT_ID + 1`, the
trading session keeps `IB_CLIENT_ID`), subscribes `reqRealTimeBars` (TRADES) for
each symbol's CME front month and yields a minute once its last 5-second bar (the
one starting at second 55) arrived, or the next minute's first one. Bad bars (non
finite or non-positive prices, high below low, open or close outside the range,
time not moving forward) are skipped and counted by reason, as the file feeds do
with `--skip-bad`; a lost session is reconnected and resubscribed. A session
that stays open with nothing received for `IB_SILENCE_TIMEOUT_S` (the gateway's
clock is asked while quiet, so no bars outside trading hours is no silence;
`trader.venues.ib_watch`) is closed, counted in `silences` and resubscribed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from ib_async import IB, Future, RealTimeBar, RealTimeBarList

from features.rolls import front_month
from infra.settings import Settings
from trader.core.bar import MarketBar
from trader.feeds.base import Feed
from trader.venues.ib_watch import watch_ib

__all__ = ["IbFeed", "MinuteBars"]

log = logging.getLogger(__name__)

_LAST_SECOND = 55  # the last 5-second bar of a minute starts here


class MinuteBars:
    """Aggregate 5-second bars into 1-minute bars per symbol (`ts_s` = the minute's close)."""

    def __init__(self) -> None:
        self._open: dict[str, list[float]] = {}  # symbol -> [start, o, h, l, c, v]

    def push(
        self, symbol: str, t_s: int, o: float, h: float, lo: float, c: float, v: float
    ) -> list[MarketBar]:
        """Add one 5-second bar starting at `t_s`; return the minutes it completed."""
        done: list[MarketBar] = []
        start = t_s - t_s % 60
        cur = self._open.get(symbol)
        if cur is not None and cur[0] != start:
            done.append(self._finish(symbol))
            cur = None
        if cur is None:
            self._open[symbol] = [start, o, h, lo, c, v]
        else:
            cur[2], cur[3], cur[4], cur[5] = max(cur[2], h), min(cur[3], lo), c, cur[5] + v
        if t_s % 60 >= _LAST_SECOND:
            done.append(self._finish(symbol))
        return done

    def _finish(self, symbol: str) -> MarketBar:
        start, o, h, lo, c, v = self._open.pop(symbol)
        return MarketBar(symbol, int(start) + 60, o, h, lo, c, v)


def bad_bar_reason(bar: RealTimeBar, last_s: int | None) -> str | None:
    """Return why a 5-second bar is unusable, or None."""
    prices = (bar.open_, bar.high, bar.low, bar.close)
    if not all(math.isfinite(p) and p > 0 for p in prices):
        return "non-positive or non-finite price"
    if bar.high < bar.low or not (
        bar.low <= bar.open_ <= bar.high and bar.low <= bar.close <= bar.high
    ):
        return "high/low do not bound open/close"
    if not math.isfinite(bar.volume) or bar.volume < 0:
        return "bad volume"
    if last_s is not None and int(bar.time.timestamp()) <= last_s:
        return "timestamp out of order"
    return None


class IbFeed(Feed):
    """Minutes built from IB real-time bars (see the module docstring)."""

    source = "live"
    live = True

    def __init__(
        self,
        symbols: tuple[str, ...],
        *,
        host: str = "127.0.0.1",
        port: int = 4002,
        client_id: int = 2,
        connect_timeout_s: float = 5.0,
        retry_s: float = 1.0,
        silence_timeout_s: float = 30.0,
        watch_s: float = 0.25,
    ) -> None:
        super().__init__(f"ib:{host}:{port}")
        self.symbols = symbols
        self.host, self.port, self.client_id = host, port, client_id
        self.connect_timeout_s = connect_timeout_s
        self.retry_s = retry_s
        self.silence_timeout_s, self.watch_s = silence_timeout_s, watch_s
        self.ib = IB()
        self.connected = False
        self._minutes = MinuteBars()
        self._last: dict[str, int] = {}
        self._queue: asyncio.Queue[MarketBar | None] = asyncio.Queue()
        self._lost = asyncio.Event()
        self._closed = False
        #: sessions closed because the connection went silent (`ib_watch`)
        self.silences = 0

    @classmethod
    def from_settings(cls, settings: Settings, symbols: tuple[str, ...]) -> IbFeed:
        """Return the feed at the gateway of `IB_HOST`/`IB_PORT`, client id `IB_CLIENT_ID + 1`."""
        return cls(
            symbols,
            host=settings.ib_host,
            port=settings.ib_port,
            client_id=settings.ib_client_id + 1,
            silence_timeout_s=settings.ib_silence_timeout_s,
        )

    async def _subscribe(self) -> None:
        await self.ib.connectAsync(
            self.host,
            self.port,
            clientId=self.client_id,
            timeout=self.connect_timeout_s,
            readonly=True,
        )
        year, month = front_month(datetime.now(UTC).date())
        wanted = [Future(s, f"{year}{month:02d}", "CME", currency="USD") for s in self.symbols]
        for want, got in zip(wanted, await self.ib.qualifyContractsAsync(*wanted), strict=True):
            if not isinstance(got, Future):
                log.warning("ib feed: no CME contract for %s", want.symbol)
                continue
            bars = self.ib.reqRealTimeBars(got, 5, "TRADES", False)
            bars.updateEvent += self._on_bars
        self.connected = True

    def _on_bars(self, bars: RealTimeBarList, has_new_bar: bool) -> None:
        if not has_new_bar or not bars:
            return
        symbol = bars.contract.symbol if bars.contract is not None else ""
        bar = bars[-1]
        reason = bad_bar_reason(bar, self._last.get(symbol))
        if reason is not None:
            self.stats.skip(reason)
            log.warning("ib feed: skipped a %s bar at %s: %s", symbol, bar.time, reason)
            return
        self._last[symbol] = int(bar.time.timestamp())
        t_s = int(bar.time.timestamp())
        for minute in self._minutes.push(
            symbol, t_s, bar.open_, bar.high, bar.low, bar.close, float(bar.volume)
        ):
            self.stats.bars += 1
            self.stats.last_ts_s = minute.ts_s
            self._queue.put_nowait(minute)

    def _on_disconnected(self) -> None:
        self.connected = False
        self._lost.set()

    async def aiter(self) -> AsyncIterator[MarketBar]:
        self.ib.disconnectedEvent += self._on_disconnected
        keeper = asyncio.create_task(self._keep_session())
        try:
            while True:
                bar = await self._queue.get()
                if bar is None:
                    return
                yield bar
        finally:
            keeper.cancel()
            self.ib.disconnect()

    async def _keep_session(self) -> None:
        """Connect and subscribe; after a loss, retry every `retry_s` until back."""
        while not self._closed:
            try:
                await self._subscribe()
            except (OSError, TimeoutError, ConnectionError) as exc:
                log.warning("ib feed: gateway not reachable: %s", exc)
                self.ib.disconnect()
                await asyncio.sleep(self.retry_s)  # retry interval
                continue
            self._lost.clear()
            watch = asyncio.create_task(self._watch_silence())
            try:
                await self._lost.wait()
            finally:
                watch.cancel()

    async def _watch_silence(self) -> None:
        """Close a session that stays open with nothing arriving (`ib_watch`); resubscribe follows."""
        where = f"{self.host}:{self.port} (feed)"
        if await watch_ib(self.ib, self.silence_timeout_s, self.watch_s, where):
            self.silences += 1
            self.ib.disconnect()  # disconnectedEvent: the session is lost

    async def aclose(self) -> None:
        self._closed = True
        self.ib.disconnect()
        self._queue.put_nowait(None)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "connected": self.connected, "silences": self.silences}
