"""The monitor's view of the `orders` topic: working orders and fills from a paper bracket."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from infra.contracts import VenueEvent, encode
from streams.monitor_state import MonitorState, lag_summary, summarize_trader
from streams.monitor_view import render
from trader.core.bar import MarketBar
from trader.core.instruments import BUILTIN
from trader.venues.base import BracketOrder
from trader.venues.paper import PaperVenue

NOW = datetime(2024, 3, 5, 15, 30, tzinfo=UTC)
T0 = int(NOW.timestamp())


class _Session:
    in_rth = True
    minutes_to_close = 300


def test_working_orders_and_fills_follow_a_bracket() -> None:
    venue = PaperVenue({"ES": BUILTIN["ES"]})
    events: list[VenueEvent] = []
    venue.add_listener(events.append)
    state = MonitorState(day=NOW.date())

    def observe() -> None:
        for e in events:
            raw = encode(e)
            state.observe("orders", raw, T0 * 1000)
            state.observe("orders", raw, T0 * 1000)  # at least once: a redelivery counts once
        events.clear()

    venue.submit_bracket(
        BracketOrder(
            client_order_id="m1-entry",
            symbol="ES",
            side="buy",
            quantity=2,
            stop_distance=4.0,
            target_distance=8.0,
        )
    )
    observe()
    assert [w["client_order_id"] for w in state.orders()["working"]] == ["m1-entry"]
    venue.on_bar(MarketBar("ES", T0, 5000, 5001, 4999, 5000, 10.0), _Session())
    observe()
    snap = state.orders()
    assert {w["role"]: w["price"] for w in snap["working"]} == {
        "stop": 4996.25,
        "target": 5008.25,
    }
    ((fill),) = snap["latest_fills"]
    assert (fill["role"], fill["quantity"], fill["price"]) == ("entry", 2, 5000.25)
    venue.on_bar(MarketBar("ES", T0 + 60, 5001, 5009, 5000, 5008, 10.0), _Session())
    observe()
    snap = state.orders()
    assert snap["working"] == []
    assert [f["role"] for f in snap["latest_fills"]] == ["target", "entry"]
    assert snap["events"]["order_filled"] == 2 and snap["events"]["order_cancelled"] == 1
    assert state.topics["orders"] == 2 * sum(snap["events"].values())

    full = state.snapshot(
        NOW,
        topic_names={"orders": "t.orders"},
        lag=lag_summary([], supported=True, notes=[]),
        trader=summarize_trader("http://x", None, None, "refused"),
    )
    console = Console(record=True, width=160)
    console.print(render(full))
    text = console.export_text()
    for needle in ("working orders: 0", "latest fills", "5008.25", "m1-target"):
        assert needle in text, needle


def test_an_undecodable_order_record_is_counted_not_raised() -> None:
    state = MonitorState(day=NOW.date())
    state.observe("orders", b"{not json", T0 * 1000)
    assert state.decode_errors["orders"] == 1 and state.orders()["working"] == []
