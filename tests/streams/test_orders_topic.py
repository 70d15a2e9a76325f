"""The `orders` topic in the streams worker: validated per contract, sunk to the lake, not folded."""

from __future__ import annotations

from infra.contracts import LAKE_TOPICS, Event, VenueEvent, encode, event_key
from infra.lake import to_table
from streams.processing import SOURCE_TOPICS
from streams.validate import Rejected, validate_record
from tests.factories import bar, order_events


def test_every_order_contract_validates_on_the_orders_topic_and_a_bar_does_not() -> None:
    for event in order_events():
        got = validate_record("orders", "t.orders", 0, 1, event_key(event), encode(event))
        assert got == event and isinstance(got, VenueEvent)
    wrong = validate_record("orders", "t.orders", 0, 2, b"ES", encode(bar()))
    assert isinstance(wrong, Rejected)
    assert "got 'bar', expected 'venue_event'" in wrong.dead_letter.reason
    assert wrong.dead_letter.source_topic == "t.orders"


def test_orders_are_sunk_to_the_lake_with_typed_columns_but_not_folded() -> None:
    assert "orders" in LAKE_TOPICS and "orders" not in SOURCE_TOPICS
    events: list[Event] = order_events()
    rows = [
        {**e.to_dict(), "kafka_partition": 0, "kafka_offset": i, "payload": encode(e)}
        for i, e in enumerate(events)
    ]
    table = to_table("orders", rows)
    assert table.num_rows == len(events)
    assert table.column("kind").to_pylist()[:4] == [
        "order_submitted",
        "order_accepted",
        "order_rejected",
        "order_filled",
    ]
    assert table.column("fill_price").to_pylist()[3] == 5000.0
    assert table.column("cumulative_quantity").to_pylist()[3] == 1
    assert table.column("status").to_pylist()[-1] == "matched"
    assert set(table.column("contract").to_pylist()) == {"ESZ6"}
