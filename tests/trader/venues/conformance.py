"""The venue conformance suite: what every venue (paper, each broker adapter) must do.

A venue joins by supplying a `VenueDriver`: it builds the venue, moves its market
(one bar at a time: the paper venue fills from bars; an adapter's driver tells its
local simulator to trade there) and drops or restores the session. The checks use
only the `Venue` interface and the order events; run them all with
`run_conformance(factory)` or one at a time through `CHECKS` (the pytest module
parametrises over venue factories and checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from infra.contracts import (
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    VenueEvent,
)
from trader.venues.base import (
    BracketOrder,
    ConnectionState,
    DuplicateClientOrderId,
    UnknownOrder,
    Venue,
    VenueDisconnected,
)

__all__ = ["CHECKS", "Recorder", "VenueDriver", "VenueFactory", "run_conformance"]


class VenueDriver(ABC):
    """One venue under test and the means to move its market and its session."""

    #: a symbol the venue trades, its tick size, and one it refuses
    symbol: str = "ES"
    tick: float = 0.25
    unknown_symbol: str = "ZZ"
    #: the price the market starts at
    start_price: float = 5000.0
    timeout_s: float = 5.0

    def __init__(self, venue: Venue) -> None:
        self.venue = venue

    @abstractmethod
    async def bar(self, open: float, high: float, low: float, close: float) -> None:
        """Make the market trade one bar with this range (fills follow from it)."""

    @abstractmethod
    async def drop_session(self) -> None:
        """Cut the venue's session as a network failure would (orders keep working there)."""

    async def restore_session(self) -> None:
        """Let the venue connect again."""
        await self.venue.connect()

    async def close(self) -> None:
        """Release what the driver started."""
        with contextlib.suppress(Exception):
            await self.venue.disconnect()


#: Build a driver; `max_fill_per_bar` asks for a market that fills at most that many per bar.
VenueFactory = Callable[[int | None], Awaitable[VenueDriver]]


@dataclass
class Recorder:
    """Every order event the venue published, in order (from its listener)."""

    events: list[VenueEvent] = field(default_factory=list)

    def __call__(self, event: VenueEvent) -> None:
        self.events.append(event)

    def of(self, cid: str, kind: type[OrderEvent] | None = None) -> list[OrderEvent]:
        """Return the events of one order (of one kind)."""
        return [
            e
            for e in self.events
            if isinstance(e, OrderEvent)
            and e.client_order_id == cid
            and (kind is None or isinstance(e, kind))
        ]

    async def wait(self, what: Callable[[], bool], timeout_s: float, why: str) -> None:
        """Poll until `what()` holds (a venue may answer from its own tasks) or time runs out."""
        deadline = time.monotonic() + timeout_s
        while not what():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {why}; events: {self.events}")
            await asyncio.sleep(0.002)


def _bracket(d: VenueDriver, cid: str, qty: int = 2, side: str = "buy") -> BracketOrder:
    return BracketOrder(
        client_order_id=cid,
        symbol=d.symbol,
        side=side,  # type: ignore[arg-type]
        quantity=qty,
        stop_distance=16 * d.tick,
        target_distance=32 * d.tick,
        strategy="S2",
        signal_id=f"sig-{cid}",
    )


async def _filled_bracket(d: VenueDriver, rec: Recorder, o: BracketOrder) -> tuple[float, float]:
    """Submit a bracket, trade a quiet bar, and return the working (stop, target) prices."""
    d.venue.submit_bracket(o)
    p = d.start_price
    await d.bar(p, p + d.tick, p - d.tick, p)
    stop_id, target_id = o.child_id("stop"), o.child_id("target")
    await rec.wait(
        lambda: bool(rec.of(stop_id, OrderAccepted) and rec.of(target_id, OrderAccepted)),
        d.timeout_s,
        "the bracket's children after the entry's fill",
    )
    stop = rec.of(stop_id, OrderSubmitted)[0]
    target = rec.of(target_id, OrderSubmitted)[0]
    assert isinstance(stop, OrderSubmitted) and isinstance(target, OrderSubmitted)
    assert stop.stop_price is not None and target.limit_price is not None
    return stop.stop_price, target.limit_price


async def check_bracket_lifecycle_and_oco_target(d: VenueDriver, rec: Recorder) -> None:
    """Entry submitted, accepted, filled; children placed; the target's fill cancels the stop."""
    o = _bracket(d, "life-entry")
    stop, target = await _filled_bracket(d, rec, o)
    entry = rec.of(o.client_order_id)
    assert [type(e) for e in entry] == [OrderSubmitted, OrderAccepted, OrderFilled]
    fill = entry[-1]
    assert isinstance(fill, OrderFilled) and fill.leaves_quantity == 0
    assert fill.cumulative_quantity == 2 and fill.side == "buy" and fill.venue_fill_id
    assert entry[1].venue_order_id and fill.venue_order_id == entry[1].venue_order_id
    assert stop == pytest.approx(fill.fill_price - o.stop_distance, abs=d.tick)
    assert target == pytest.approx(fill.fill_price + o.target_distance, abs=d.tick)
    children = rec.of(o.child_id("stop"), OrderSubmitted) + rec.of(o.child_id("target"))[:1]
    assert all(c.parent_id == o.client_order_id and c.side == "sell" for c in children)  # type: ignore[attr-defined]
    (pos,) = d.venue.positions()
    assert (pos.symbol, pos.quantity) == (d.symbol, 2)
    assert pos.avg_price == pytest.approx(fill.fill_price)
    assert {w.role for w in d.venue.working_orders()} == {"stop", "target"}
    await d.bar(target - d.tick, target + 4 * d.tick, target - 2 * d.tick, target + d.tick)
    await rec.wait(
        lambda: bool(rec.of(o.child_id("stop"), OrderCancelled)), d.timeout_s, "the stop's OCO"
    )
    (tfill,) = rec.of(o.child_id("target"), OrderFilled)
    assert isinstance(tfill, OrderFilled) and tfill.quantity == 2 and tfill.leaves_quantity == 0
    assert tfill.fill_price >= target - d.tick
    assert not rec.of(o.child_id("stop"), OrderFilled)
    assert d.venue.positions() == [] and d.venue.working_orders() == []


async def check_oco_stop_cancels_target(d: VenueDriver, rec: Recorder) -> None:
    """A short bracket: the stop's fill cancels the target."""
    o = _bracket(d, "stop-entry", qty=1, side="sell")
    stop, target = await _filled_bracket(d, rec, o)
    assert stop > target
    (pos,) = d.venue.positions()
    assert pos.quantity == -1
    await d.bar(stop - d.tick, stop + 2 * d.tick, stop - 2 * d.tick, stop + d.tick)
    await rec.wait(
        lambda: bool(rec.of(o.child_id("target"), OrderCancelled)), d.timeout_s, "the target's OCO"
    )
    (sfill,) = rec.of(o.child_id("stop"), OrderFilled)
    assert isinstance(sfill, OrderFilled) and sfill.side == "buy" and sfill.quantity == 1
    assert d.venue.positions() == [] and d.venue.working_orders() == []


async def check_partial_fills(d: VenueDriver, rec: Recorder) -> None:
    """With one contract per bar, a 3-lot fills in three parts; children cover all three."""
    o = _bracket(d, "part-entry", qty=3)
    d.venue.submit_bracket(o)
    p = d.start_price
    for i in range(3):
        await d.bar(p + i * d.tick, p + (i + 1) * d.tick, p + (i - 1) * d.tick, p + i * d.tick)
        want = i + 1

        def filled(n: int = want) -> bool:
            return len(rec.of(o.client_order_id, OrderFilled)) >= n

        await rec.wait(filled, d.timeout_s, f"partial fill {want}")
        if i < 2:
            (pos,) = d.venue.positions()
            assert pos.quantity == i + 1
    fills = rec.of(o.client_order_id, OrderFilled)
    assert [(f.quantity, f.cumulative_quantity, f.leaves_quantity) for f in fills] == [  # type: ignore[attr-defined]
        (1, 1, 2),
        (1, 2, 1),
        (1, 3, 0),
    ]
    await rec.wait(
        lambda: bool(rec.of(o.child_id("stop"), OrderAccepted)), d.timeout_s, "the children"
    )
    (stop,) = rec.of(o.child_id("stop"), OrderSubmitted)
    assert isinstance(stop, OrderSubmitted) and stop.quantity == 3
    (pos,) = d.venue.positions()
    avg = sum(f.fill_price for f in fills) / 3  # type: ignore[attr-defined]
    assert pos.quantity == 3 and pos.avg_price == pytest.approx(avg)


async def check_rejection(d: VenueDriver, rec: Recorder) -> None:
    """An order the venue cannot take is rejected with its reason, never accepted."""
    bad = BracketOrder(
        client_order_id="rej-entry",
        symbol=d.unknown_symbol,
        side="buy",
        quantity=1,
        stop_distance=4.0,
        target_distance=8.0,
    )
    d.venue.submit_bracket(bad)
    await rec.wait(lambda: bool(rec.of("rej-entry", OrderRejected)), d.timeout_s, "the rejection")
    (rejected,) = rec.of("rej-entry", OrderRejected)
    assert isinstance(rejected, OrderRejected) and rejected.reason
    assert not rec.of("rej-entry", OrderAccepted) and not rec.of("rej-entry", OrderFilled)
    assert d.venue.working_orders() == [] and d.venue.positions() == []


async def check_cancel_before_and_after_fill(d: VenueDriver, rec: Recorder) -> None:
    """A working entry cancels; a filled one cannot be cancelled and its position stays."""
    o1 = _bracket(d, "can1-entry")
    d.venue.submit_bracket(o1)
    await rec.wait(lambda: bool(rec.of(o1.client_order_id, OrderAccepted)), d.timeout_s, "accept")
    d.venue.cancel(o1.client_order_id)
    await rec.wait(lambda: bool(rec.of(o1.client_order_id, OrderCancelled)), d.timeout_s, "cancel")
    p = d.start_price
    await d.bar(p, p + d.tick, p - d.tick, p)
    assert not rec.of(o1.client_order_id, OrderFilled) and d.venue.positions() == []
    o2 = _bracket(d, "can2-entry")
    await _filled_bracket(d, rec, o2)
    with pytest.raises(UnknownOrder):
        d.venue.cancel(o2.client_order_id)
    assert not rec.of(o2.client_order_id, OrderCancelled)
    (pos,) = d.venue.positions()
    assert pos.quantity == 2
    d.venue.cancel_all(d.symbol)  # the children go; the position stays, unprotected
    await rec.wait(
        lambda: bool(rec.of(o2.child_id("target"), OrderCancelled)), d.timeout_s, "cancel_all"
    )
    assert d.venue.working_orders() == [] and d.venue.positions()[0].quantity == 2
    d.venue.flatten(d.symbol)
    await rec.wait(lambda: d.venue.positions() == [], d.timeout_s, "the flatten")
    (flat,) = [e for e in rec.events if isinstance(e, OrderFilled) and e.role == "flatten"]
    assert isinstance(flat, OrderFilled) and flat.side == "sell" and flat.quantity == 2


async def check_duplicate_client_order_id(d: VenueDriver, rec: Recorder) -> None:
    """A client order id is used once: the second submission is refused at once."""
    o = _bracket(d, "dup-entry", qty=1)
    d.venue.submit_bracket(o)
    await rec.wait(lambda: bool(rec.of(o.client_order_id, OrderAccepted)), d.timeout_s, "accept")
    with pytest.raises(DuplicateClientOrderId):
        d.venue.submit_bracket(o)
    assert len(rec.of(o.client_order_id, OrderSubmitted)) == 1
    assert len(d.venue.working_orders()) == 1


async def check_modify_moves_the_stop(d: VenueDriver, rec: Recorder) -> None:
    """A modified stop is acknowledged with its new price and triggers there, not before."""
    o = _bracket(d, "mod-entry", qty=1)
    stop, target = await _filled_bracket(d, rec, o)
    assert stop + 2 * d.tick < target  # the bars below never reach the target
    lower = stop - 8 * d.tick
    d.venue.modify(o.child_id("stop"), stop_price=lower)
    await rec.wait(
        lambda: len(rec.of(o.child_id("stop"), OrderAccepted)) == 2, d.timeout_s, "the modify"
    )
    ack = rec.of(o.child_id("stop"), OrderAccepted)[-1]
    assert isinstance(ack, OrderAccepted) and ack.stop_price == pytest.approx(lower)
    await d.bar(stop + d.tick, stop + 2 * d.tick, stop - 2 * d.tick, stop)  # old stop only
    assert d.venue.positions()[0].quantity == 1 and not rec.of(o.child_id("stop"), OrderFilled)
    await d.bar(stop, stop + d.tick, lower - 2 * d.tick, lower - d.tick)
    await rec.wait(lambda: bool(rec.of(o.child_id("stop"), OrderFilled)), d.timeout_s, "stop")
    assert d.venue.positions() == []


async def check_disconnect_mid_order_and_reconnect(d: VenueDriver, rec: Recorder) -> None:
    """The session drops while an entry works; the fill happens meanwhile and is known after."""
    o = _bracket(d, "disc-entry")
    d.venue.submit_bracket(o)
    await rec.wait(lambda: bool(rec.of(o.client_order_id, OrderAccepted)), d.timeout_s, "accept")
    await d.drop_session()
    await rec.wait(lambda: not d.venue.connected, d.timeout_s, "the session to drop")
    assert d.venue.state is not ConnectionState.CONNECTED
    with pytest.raises(VenueDisconnected):
        d.venue.submit_bracket(_bracket(d, "disc2-entry"))
    with pytest.raises(VenueDisconnected):
        d.venue.cancel(o.client_order_id)
    p = d.start_price
    await d.bar(p, p + d.tick, p - d.tick, p)  # the exchange fills while we are away
    await d.restore_session()
    await rec.wait(lambda: d.venue.connected, d.timeout_s, "the session to come back")
    await rec.wait(lambda: bool(rec.of(o.client_order_id, OrderFilled)), d.timeout_s, "the fill")
    (pos,) = d.venue.positions()
    assert (pos.symbol, pos.quantity) == (d.symbol, 2)
    assert {w.client_order_id for w in d.venue.working_orders()} == {
        o.child_id("stop"),
        o.child_id("target"),
    }
    assert not rec.of("disc2-entry")  # refused while down, never sent


async def check_event_stream(d: VenueDriver, rec: Recorder) -> None:
    """`events()` yields what the listeners get, in the same order."""
    seen: list[VenueEvent] = []
    stream = d.venue.events()  # subscribed from here on

    async def consume() -> None:
        async for event in stream:
            seen.append(event)

    task = asyncio.create_task(consume())
    before = len(rec.events)
    o = _bracket(d, "stream-entry", qty=1)
    await _filled_bracket(d, rec, o)
    await rec.wait(lambda: len(seen) >= len(rec.events) - before, d.timeout_s, "the stream")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    stream.close()
    assert seen == rec.events[before:] and len(seen) >= 7


CHECKS: dict[str, Callable[[VenueDriver, Recorder], Awaitable[None]]] = {
    "bracket_lifecycle_and_oco_target": check_bracket_lifecycle_and_oco_target,
    "oco_stop_cancels_target": check_oco_stop_cancels_target,
    "partial_fills": check_partial_fills,
    "rejection": check_rejection,
    "cancel_before_and_after_fill": check_cancel_before_and_after_fill,
    "duplicate_client_order_id": check_duplicate_client_order_id,
    "modify_moves_the_stop": check_modify_moves_the_stop,
    "disconnect_mid_order_and_reconnect": check_disconnect_mid_order_and_reconnect,
    "event_stream": check_event_stream,
}


async def run_check(factory: VenueFactory, name: str) -> Recorder:
    """Run one check on a fresh venue from `factory`; return what it recorded."""
    driver = await factory(1 if name == "partial_fills" else None)
    rec = Recorder()
    driver.venue.add_listener(rec)
    try:
        await CHECKS[name](driver, rec)
    finally:
        await driver.close()
    return rec


async def run_conformance(factory: VenueFactory) -> dict[str, Recorder]:
    """Run every check, each on a fresh venue; raise on the first that fails."""
    return {name: await run_check(factory, name) for name in CHECKS}
