"""What the venues' silence tests share: the counter, the timing, the reconciliation, a feed's run.

A simulator's `silence` keeps its connections open while it reads and drops
everything and writes nothing; `speak` ends it. Each venue and feed must stay up
while only its probes are answered (no trades outside trading hours), notice the
silence within its bound, count it, and come back once the simulator speaks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.helpers import wait_until_async
from trader import metrics
from trader.core.bar import MarketBar
from trader.core.instruments import Instrument
from trader.venues.base import Venue
from trader.venues.ledger import Ledger
from trader.venues.reconcile import known_order_ids, reconcile

#: what may pass after the bound before a watch sees it (its poll, a loaded machine)
SLACK_S = 2.0


def silences(venue: str, plant: str) -> float:
    """Return `tradeloop_venue_silences_total{venue, plant}`."""
    labels = {"venue": venue, "plant": plant}
    return metrics.REGISTRY.get_sample_value("tradeloop_venue_silences_total", labels) or 0.0


async def idle_for(count: Callable[[], int], more: int, bound_s: float) -> float:
    """Wait until `count` (probes answered) grew by `more`; return the seconds it took."""
    start, first = time.monotonic(), count()
    await wait_until_async(lambda: count() >= first + more, 4 * bound_s, what="probes answered")
    return time.monotonic() - start


async def noticed_within(predicate: Callable[[], object], bound_s: float, early_s: float) -> float:
    """Wait for `predicate` after a silence began; check it came within the bound, return when."""
    silent_from = time.monotonic()
    await wait_until_async(predicate, bound_s + SLACK_S, interval_s=0.01, what="silence noticed")
    noticed_s = time.monotonic() - silent_from
    assert bound_s - early_s < noticed_s < bound_s + SLACK_S
    return noticed_s


def assert_reconciles(
    venue: Venue, events: list[Any], instruments: Mapping[str, Instrument]
) -> None:
    """Rebuild a ledger from `events` and check it reconciles clean against `venue`."""
    ledger = Ledger({s: i.point_value_usd for s, i in instruments.items()})
    for e in events:
        ledger.apply(e)
    result = reconcile(
        venue,
        ledger,
        known_ids=known_order_ids(events),
        tick_sizes={s: i.tick_size for s, i in instruments.items()},
        symbols=tuple(instruments),
        trigger="reconnect",
    )
    assert result.clean, result.status()


@dataclass
class FeedSilence:
    """A live feed over a simulator, and the simulator's switches the check needs."""

    feed: Any  # a live feed with `silences` and `connected`
    label: tuple[str, str]  # (venue, plant) of the silences counter
    subscribed: Callable[[], bool]  # the simulator holds the feed's ES subscription
    publish_bar: Callable[[MarketBar], None]
    idle: Callable[[], Awaitable[float]]  # seconds of only probes answered (past the bound)
    silence: Callable[[], None]
    speak: Callable[[], None]
    bound_s: float
    early_s: float  # how long before the bound a watch may see it (one probe interval)


async def check_feed_silence(c: FeedSilence, t0: int) -> None:
    """Stay up without trades; notice a silence, count it; resubscribe and yield bars again."""
    got: list[MarketBar] = []

    async def consume() -> None:
        async for bar in c.feed.aiter():
            got.append(bar)

    task = asyncio.create_task(consume())
    try:
        await wait_until_async(c.subscribed, 10, what="subscribed")
        c.publish_bar(MarketBar("ES", t0, 5000.0, 5002.0, 4999.0, 5001.0, 40.0))
        await wait_until_async(lambda: len(got) == 1, 5, what="the first minute")
        before = silences(*c.label)

        # no trades (the market closed): answered probes keep the session
        assert await c.idle() > c.bound_s
        assert c.feed.connected and c.feed.silences == 0 and silences(*c.label) == before

        c.silence()
        await noticed_within(lambda: c.feed.silences == 1, c.bound_s, c.early_s)
        assert silences(*c.label) == before + 1
        c.speak()
        await wait_until_async(
            lambda: c.feed.connected and c.subscribed(), 15, what="subscribed again"
        )
        c.publish_bar(MarketBar("ES", t0 + 60, 5001.0, 5003.0, 5000.0, 5002.0, 12.0))
        await wait_until_async(lambda: len(got) == 2, 5, what="the minute after the silence")
        assert (got[1].ts_s, got[1].close) == (t0 + 60, 5002.0)
        assert c.feed.silences == 1 and c.feed.describe()["silences"] == 1
    finally:
        c.speak()
        await c.feed.aclose()
        await asyncio.wait_for(task, 5)
