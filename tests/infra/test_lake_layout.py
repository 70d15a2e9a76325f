"""The event lake: offset-named keys, typed columns, exact payloads, local dir and S3."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

from infra.contracts import (
    Event,
    decode,
    encode,
    topic_for,
)
from infra.lake import (
    iter_payloads,
    lake_key,
    list_files,
    parse_key,
    read_topic,
    schema_for,
    write_batch,
)
from infra.objectstore import LocalObjectStore, store_for_uri
from tests.kit.synth import synthetic_events


def rows_of(events: list[Event], partition: int = 0, first_offset: int = 0) -> list[dict[str, Any]]:
    return [
        {
            **e.to_dict(),
            "kafka_partition": partition,
            "kafka_offset": first_offset + i,
            "payload": encode(e),
        }
        for i, e in enumerate(events)
    ]


def test_key_layout_and_parse() -> None:
    key = lake_key("bars", dt.date(2024, 3, 4), "ES", 2, 100, 199)
    assert key == "bars/date=2024-03-04/symbol=ES/part-2-100-199.parquet"
    info = parse_key(key)
    assert info is not None
    assert (info["topic"], info["date"], info["symbol"], info["partition"], info["first"], info["last"]) == (
        "bars", "2024-03-04", "ES", 2, 100, 199,
    )  # fmt: skip
    assert parse_key("_sink/bars/part-0.json") is None
    with pytest.raises(ValueError):
        lake_key("bars", "2024-3-4", "ES", 0, 1, 2)
    with pytest.raises(ValueError):
        lake_key("bars", "2024-03-04", "ES", 0, 5, 2)


def test_write_groups_by_date_and_symbol_and_names_by_offsets(tmp_path: Any) -> None:
    start = dt.datetime(2024, 3, 4, 23, 50, tzinfo=dt.UTC)  # crosses midnight
    bars = [e for e in synthetic_events(200, start=start) if topic_for(e) == "bars"]
    store = LocalObjectStore(tmp_path)
    keys = write_batch(store, "bars", 3, rows_of(bars, partition=3, first_offset=500))
    infos = [parse_key(k) for k in keys]
    assert {(i["date"], i["symbol"]) for i in infos if i} == {
        ("2024-03-04", "ES"), ("2024-03-04", "NQ"), ("2024-03-05", "ES"), ("2024-03-05", "NQ"),
    }  # fmt: skip
    assert all(i and i["partition"] == 3 for i in infos)
    # the same rows give the same keys: a re-upload overwrites, it never duplicates
    assert write_batch(store, "bars", 3, rows_of(bars, partition=3, first_offset=500)) == keys
    table = read_topic(str(tmp_path), "bars")
    assert table.num_rows == len(bars)
    assert table.schema.equals(schema_for("bars"))
    assert table.column("event_timestamp").type == pa.timestamp("us", tz="UTC")
    assert sorted(table.column("kafka_offset").to_pylist()) == list(range(500, 500 + len(bars)))


def test_typed_columns_and_exact_payload_round_trip(tmp_path: Any) -> None:
    events = list(synthetic_events(600))
    store = LocalObjectStore(tmp_path)
    for topic in ("bars", "signals", "outcomes"):
        mine = [e for e in events if topic_for(e) == topic]
        write_batch(store, topic, 0, rows_of(mine))
        back = [decode(body) for _, _, body in iter_payloads(str(tmp_path), topic)]
        assert sorted(back, key=lambda e: e.event_id) == sorted(mine, key=lambda e: e.event_id)
    signals = read_topic(str(tmp_path), "signals")
    first = next(e for e in events if topic_for(e) == "signals")
    row = signals.filter(pa.compute.equal(signals.column("event_id"), first.event_id)).to_pylist()[
        0
    ]
    assert row["rsi_14"] == first.feature_dict()["rsi_14"]  # type: ignore[attr-defined]
    assert row["strategy"] == first.strategy  # type: ignore[attr-defined]
    outcomes = read_topic(str(tmp_path), "outcomes")
    assert outcomes.column("r_multiple").type == pa.float64()
    assert outcomes.column("counterfactual").type == pa.bool_()


def test_read_topic_filters_by_time(tmp_path: Any) -> None:
    bars = [e for e in synthetic_events(400) if topic_for(e) == "bars"]
    write_batch(LocalObjectStore(tmp_path), "bars", 0, rows_of(bars))
    lo, hi = bars[10].ts_event, bars[50].ts_event
    table = read_topic(str(tmp_path), "bars", lo, hi)
    expected = [e for e in bars if lo <= e.ts_event < hi]
    assert table.num_rows == len(expected)
    assert table.column("event_timestamp").to_pylist() == sorted(e.ts_event for e in expected)
    assert read_topic(str(tmp_path), "nothing").num_rows == 0


def test_lake_on_s3(make_settings: Callable[..., Any]) -> None:
    settings = make_settings(kafka=False, s3=True)
    store = store_for_uri(settings.lake, settings)
    events = [e for e in synthetic_events(300) if topic_for(e) == "outcomes"]
    keys = write_batch(store, "outcomes", 1, rows_of(events, partition=1))
    assert keys and all(store.exists(k) for k in keys)
    assert {f["key"] for f in list_files(store, "outcomes")} == set(keys)
    table = read_topic(settings.lake, "outcomes", settings=settings)
    assert sorted(table.column("event_id").to_pylist()) == sorted(e.event_id for e in events)
