"""The paper venue's own rules beyond the conformance suite: limit entries, expiry, sizes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from infra.contracts import (
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    VenueEvent,
)
from trader.core.bar import MarketBar
from trader.core.instruments import BUILTIN
from trader.venues.base import BracketOrder, InvalidOrder
from trader.venues.paper import PaperVenue, PaperVenueSettings

T0 = 1_709_650_860


@dataclass(frozen=True)
class _Session:
    in_rth: bool = True
    minutes_to_close: int = 300


def _venue(**config: object) -> tuple[PaperVenue, list[VenueEvent]]:
    venue = PaperVenue({"ES": BUILTIN["ES"]}, PaperVenueSettings(**config))  # type: ignore[arg-type]
    events: list[VenueEvent] = []
    venue.add_listener(events.append)
    return venue, events


def _limit(cid: str, price: float, side: str = "buy", qty: int = 1) -> BracketOrder:
    return BracketOrder(
        client_order_id=cid,
        symbol="ES",
        side=side,  # type: ignore[arg-type]
        quantity=qty,
        stop_distance=4.0,
        target_distance=8.0,
        entry_type="limit",
        limit_price=price,
    )


def test_a_limit_entry_waits_for_its_price_and_fills_at_the_limit_or_a_better_open() -> None:
    venue, events = _venue()
    venue.submit_bracket(_limit("l1-entry", 4995.0))
    venue.on_bar(MarketBar("ES", T0, 5000, 5001, 4996, 5000, 1), _Session())
    assert not [e for e in events if isinstance(e, OrderFilled)]
    venue.on_bar(MarketBar("ES", T0 + 60, 4999, 5000, 4994, 4996, 1), _Session())
    (fill,) = [e for e in events if isinstance(e, OrderFilled)]
    assert fill.fill_price == 4995.0 and fill.commission_usd == pytest.approx(2.25)
    stop = next(e for e in events if isinstance(e, OrderSubmitted) and e.role == "stop")
    assert stop.stop_price == 4991.0
    venue.submit_bracket(_limit("l2-entry", 5010.0, side="sell"))  # gaps through: the open
    venue.flatten("ES")
    venue.submit_bracket(_limit("l3-entry", 5010.0, side="sell"))
    venue.on_bar(MarketBar("ES", T0 + 120, 5012, 5013, 5008, 5009, 1), _Session())
    last = [e for e in events if isinstance(e, OrderFilled)][-1]
    assert (last.client_order_id, last.fill_price) == ("l3-entry", 5012.0)


def test_a_working_limit_entry_expires_at_the_session_end() -> None:
    venue, events = _venue()
    venue.submit_bracket(_limit("x1-entry", 4900.0))
    venue.on_bar(MarketBar("ES", T0, 5000, 5001, 4999, 5000, 1), _Session(minutes_to_close=0))
    (expired,) = [e for e in events if isinstance(e, OrderExpired)]
    assert expired.client_order_id == "x1-entry" and expired.cumulative_quantity == 0
    assert venue.working_orders() == [] and venue.positions() == []


def test_sizes_the_venue_refuses_and_modifications_it_checks() -> None:
    venue, events = _venue(max_order_quantity=5)
    venue.submit_bracket(_limit("big-entry", 4990.0, qty=6))
    (rejected,) = [e for e in events if isinstance(e, OrderRejected)]
    assert "quantity 6" in rejected.reason
    venue.submit_bracket(_limit("ok-entry", 4990.0, qty=2))
    venue.modify("ok-entry", quantity=3, limit_price=4991.0)
    (w,) = venue.working_orders()
    assert (w.quantity, w.limit_price) == (3, 4991.0)
    with pytest.raises(InvalidOrder):
        venue.modify("ok-entry", stop_price=4980.0)  # a limit entry has no stop price
    with pytest.raises(InvalidOrder):
        venue.modify("ok-entry", quantity=0)
