"""The feed interface: bars in time order, typed data errors, counters and pacing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams.events import Bar

__all__ = ["Feed", "FeedDataError", "FeedStats", "MarketBar", "Pacer"]


class FeedDataError(ValueError):
    """Raise when input bars are bad; names the file (or topic) and the row."""

    def __init__(self, where: str, row: int | None, reason: str) -> None:
        self.where = where
        self.row = row
        self.reason = reason
        at = f" row {row}" if row is not None else ""
        super().__init__(f"{where}:{at}: {reason}" if at else f"{where}: {reason}")


class MarketBar:
    """One bar inside the trader (cheap to create); `ts_s` is the close, epoch seconds UTC."""

    __slots__ = ("close", "high", "interval_s", "low", "open", "symbol", "ts_s", "volume")

    def __init__(
        self,
        symbol: str,
        ts_s: int,
        open: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        interval_s: int = 60,
    ) -> None:
        self.symbol = symbol
        self.ts_s = ts_s
        self.open = open
        self.high = high
        self.low = low
        self.close = close
        self.volume = volume
        self.interval_s = interval_s

    @property
    def ts_event(self) -> datetime:
        """Return the close time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.ts_s, UTC)

    def to_event(self, source: str) -> Bar:
        """Return the `Bar` event of this bar."""
        return Bar(
            ts_event=self.ts_event,
            symbol=self.symbol,
            open=self.open,
            high=self.high,
            low=self.low,
            close=self.close,
            volume=self.volume,
            interval_s=self.interval_s,
            source=source,
        )

    @classmethod
    def from_event(cls, bar: Bar) -> MarketBar:
        """Return the trader bar of a `Bar` event."""
        return cls(
            bar.symbol,
            int(bar.ts_event.timestamp()),
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            bar.volume,
            bar.interval_s,
        )

    def __repr__(self) -> str:
        return (
            f"MarketBar({self.symbol} {self.ts_event:%Y-%m-%d %H:%M} "
            f"O{self.open} H{self.high} L{self.low} C{self.close} V{self.volume:g})"
        )


@dataclass
class FeedStats:
    """What a feed delivered and what it skipped (by reason)."""

    bars: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    last_ts_s: int = 0

    def skip(self, reason: str, count: int = 1) -> None:
        """Count skipped input."""
        self.skipped += count
        self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + count

    def as_dict(self) -> dict[str, Any]:
        """Return the counters for /healthz."""
        return {
            "bars": self.bars,
            "skipped": self.skipped,
            "skipped_by_reason": dict(self.skipped_by_reason),
            "last_bar": datetime.fromtimestamp(self.last_ts_s, UTC).isoformat()
            if self.last_ts_s
            else None,
        }


class Feed:
    """Bars of one or more symbols in time order (per symbol strictly increasing)."""

    #: What events built from this feed carry in `source` by default.
    source: str = "live"
    #: Whether the feed is live (pacing does not apply, iteration is async only).
    live: bool = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = FeedStats()

    def __iter__(self) -> Iterator[MarketBar]:
        """Iterate bars synchronously (historical and simulated feeds)."""
        raise TypeError(f"feed {self.name} is live; iterate it with `aiter()`")

    async def aiter(self) -> AsyncIterator[MarketBar]:
        """Iterate bars asynchronously, yielding control to the loop now and then."""
        for i, bar in enumerate(self):
            yield bar
            if i % 64 == 63:
                await asyncio.sleep(0)

    async def aclose(self) -> None:
        """Release what the feed holds (connections)."""

    def describe(self) -> dict[str, Any]:
        """Return the feed's name, kind and counters."""
        return {"name": self.name, "source": self.source, **self.stats.as_dict()}


class Pacer:
    """Pace bars against the wall clock: `speed` bar-seconds per second (0 = no pacing)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._t0_bar: int | None = None
        self._t0_wall = 0.0

    def delay_s(self, ts_s: int) -> float:
        """Return how long to wait before releasing a bar closing at `ts_s`."""
        if self.speed <= 0:
            return 0.0
        now = time.monotonic()
        if self._t0_bar is None:
            self._t0_bar, self._t0_wall = ts_s, now
            return 0.0
        due = self._t0_wall + (ts_s - self._t0_bar) / self.speed
        return max(0.0, due - now)

    def wait(self, ts_s: int) -> None:
        """Block until the bar is due."""
        delay = self.delay_s(ts_s)
        if delay > 0:
            time.sleep(delay)

    async def await_due(self, ts_s: int) -> None:
        """Sleep (asynchronously) until the bar is due."""
        delay = self.delay_s(ts_s)
        if delay > 0:
            await asyncio.sleep(delay)
