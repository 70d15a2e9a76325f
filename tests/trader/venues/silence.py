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

from infra.contracts import OrderCancelled, OrderFilled, OrderSubmitted
from tests.helpers import wait_until_async
from tests.trader.venues.conformance import Recorder, _bracket, _filled_bracket
from trader import metrics
from trader.core.bar import MarketBar
from trader.core.instruments import Instrument
from trader.venues.base import ConnectionState, Venue
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
class VenueSilence:
    """A venue over a simulator, and the simulator's switches the check needs."""

    d: Any  # a VenueDriver with `sim`
    silences: Callable[[], float]  # the counter of the venue's plants (or API connection)
    plants: int  # how many of them the watch watches (each counts once at most)
    reconnects: Callable[[], int]
    idle: Callable[[], Awaitable[float]]  # seconds of only probes answered (past the bound)
    switch: Any  # what has `silence()` and `speak()`
    session: Any  # the SessionState the simulator fills the target in
    bound_s: float
    early_s: float  # how long before the bound a watch may see it (one probe interval)
    oco_reason: str | None = "oco"  # the stop's cancel reason after the catch-up (None: any)


async def check_venue_silence(c: VenueSilence, entry_id: str) -> None:
    """Stay up while idle; notice a silence; a target filled meanwhile comes back, reconciled."""
    d, rec = c.d, Recorder()
    d.venue.add_listener(rec)
    try:
        o = _bracket(d, entry_id, qty=2)
        _stop, target = await _filled_bracket(d, rec, o)
        if hasattr(d, "barrier"):
            await d.barrier()
        before, orders = c.silences(), len(d.sim.orders)

        # idle: only answered probes arrive, for longer than the bound; still up
        assert await c.idle() > c.bound_s
        assert d.venue.state is ConnectionState.CONNECTED and c.reconnects() == 0
        assert c.silences() == before

        c.switch.silence()
        await noticed_within(
            lambda: d.venue.state is ConnectionState.CONNECTING, c.bound_s, c.early_s
        )
        assert before < c.silences() <= before + c.plants

        away = MarketBar("ES", d.ts_s + 60, target, target + 1, target - 0.25, target, 10.0)
        d.sim.on_bar(away, c.session)  # the target fills while the gateway says nothing
        c.switch.speak()
        await rec.wait(lambda: d.venue.connected, 15, "the session back")
        await rec.wait(lambda: bool(rec.of(o.child_id("stop"), OrderCancelled)), 5, "oco")
        assert c.reconnects() == 1
        (tfill,) = rec.of(o.child_id("target"), OrderFilled)
        assert isinstance(tfill, OrderFilled) and tfill.quantity == 2
        assert tfill.fill_price == target
        (oco,) = rec.of(o.child_id("stop"), OrderCancelled)
        assert isinstance(oco, OrderCancelled) and c.oco_reason in (None, oco.reason)
        assert len(d.sim.orders) == orders  # no order placed again
        for cid in (o.client_order_id, o.child_id("stop"), o.child_id("target")):
            assert len(rec.of(cid, OrderSubmitted)) == 1  # nothing sent twice
        assert d.venue.positions() == [] and d.venue.working_orders() == []
        assert_reconciles(d.venue, rec.events, d.venue.instruments)
    finally:
        c.switch.speak()
        await d.close()


@dataclass
class FeedSilence:
    """A live feed over a simulator, and the simulator's switches the check needs."""

    feed: Any  # a live feed with `silences` and `connected`
    label: tuple[str, str]  # (venue, plant) of the silences counter
    subscribed: Callable[[], bool]  # the simulator holds the feed's ES subscription
    sim: Any  # what has `publish_bar`
    idle: Callable[[], Awaitable[float]]  # seconds of only probes answered (past the bound)
    switch: Any  # what has `silence()` and `speak()`
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
        c.sim.publish_bar(MarketBar("ES", t0, 5000.0, 5002.0, 4999.0, 5001.0, 40.0))
        await wait_until_async(lambda: len(got) == 1, 5, what="the first minute")
        before = silences(*c.label)

        # no trades (the market closed): answered probes keep the session
        assert await c.idle() > c.bound_s
        assert c.feed.connected and c.feed.silences == 0 and silences(*c.label) == before

        c.switch.silence()
        await noticed_within(lambda: c.feed.silences == 1, c.bound_s, c.early_s)
        assert silences(*c.label) == before + 1
        c.switch.speak()
        await wait_until_async(
            lambda: c.feed.connected and c.subscribed(), 15, what="subscribed again"
        )
        c.sim.publish_bar(MarketBar("ES", t0 + 60, 5001.0, 5003.0, 5000.0, 5002.0, 12.0))
        await wait_until_async(lambda: len(got) == 2, 5, what="the minute after the silence")
        assert (got[1].ts_s, got[1].close) == (t0 + 60, 5002.0)
        assert c.feed.silences == 1 and c.feed.describe()["silences"] == 1
    finally:
        c.switch.speak()
        await c.feed.aclose()
        await asyncio.wait_for(task, 5)
