"""The feed interface: bars in time order, typed data errors, counters and pacing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from trader.core.bar import MarketBar

__all__ = ["Feed", "FeedDataError", "FeedStats", "MarketBar", "Pacer"]


class FeedDataError(ValueError):
    """Raise when input bars are bad; names the file (or topic) and the row."""

    def __init__(self, where: str, row: int | None, reason: str) -> None:
        self.where = where
        self.row = row
        self.reason = reason
        at = f" row {row}" if row is not None else ""
        super().__init__(f"{where}:{at}: {reason}" if at else f"{where}: {reason}")


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
