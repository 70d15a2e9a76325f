"""Every contract round-trips; bad bytes raise one typed error naming the field."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import orjson
import pytest
from pydantic import ValidationError

from infra.contracts import (
    CONTRACTS,
    TOPICS,
    Bar,
    EventDecodeError,
    SignalSnapshot,
    decode,
    encode,
    event_key,
    json_schemas,
    topic_for,
)
from tests.factories import bar, every_contract, signal


@pytest.mark.parametrize("event", every_contract(), ids=lambda e: type(e).__name__)
def test_every_contract_round_trips(event: object) -> None:
    data = encode(event)  # type: ignore[arg-type]
    back: object = decode(data)
    assert back == event
    assert type(back) is type(event)
    assert decode(data, type(event)) == event  # type: ignore[arg-type,type-var]


def test_every_contract_is_covered_and_has_a_topic() -> None:
    assert {type(e).SCHEMA_NAME for e in every_contract()} == set(CONTRACTS)
    assert {c for spec in TOPICS.values() for c in spec.contracts} == set(CONTRACTS.values())
    assert all(topic_for(e) in TOPICS for e in every_contract())
    assert TOPICS["models"].compacted and not TOPICS["bars"].compacted


def test_events_are_frozen_and_carry_the_envelope() -> None:
    event = bar()
    wire = orjson.loads(encode(event))
    assert wire["schema"] == {"name": "bar", "version": 1}
    assert wire["event_id"] and wire["ts_event"].endswith("+00:00")
    with pytest.raises(ValidationError):
        event.close = 1.0  # type: ignore[misc]


def test_keys_and_topics() -> None:
    assert event_key(bar(symbol="NQ")) == b"NQ"
    assert topic_for(signal()) == "signals"


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        (b"\xff\x00", "<root>", "not valid JSON"),
        (b"[1, 2]", "<root>", "expected a JSON object"),
        (b'{"symbol": "ES"}', "schema", "missing"),
        (b'{"schema": {"name": "nope", "version": 1}}', "schema.name", "unknown contract"),
        (b'{"schema": {"name": "bar", "version": 9}}', "schema.version", "unsupported version"),
    ],
)
def test_malformed_bytes_raise_the_typed_error(payload: bytes, field: str, reason: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode(payload)
    assert info.value.field == field
    assert reason in info.value.reason


def test_mismatching_field_is_named() -> None:
    wire = orjson.loads(encode(bar()))
    wire["close"] = "not a number"
    with pytest.raises(EventDecodeError) as info:
        decode(orjson.dumps(wire))
    assert info.value.contract == "bar" and info.value.field == "close"

    wire = orjson.loads(encode(bar()))
    del wire["symbol"]
    with pytest.raises(EventDecodeError, match="symbol"):
        decode(orjson.dumps(wire))


def test_business_rules_are_validated() -> None:
    wire = orjson.loads(encode(bar()))
    wire["high"], wire["low"] = 10.0, 20.0
    with pytest.raises(EventDecodeError, match="high"):
        decode(orjson.dumps(wire), Bar)
    with pytest.raises(EventDecodeError, match="expected 'bar'"):
        decode(encode(signal()), Bar)
    wire = orjson.loads(encode(signal()))
    wire["features"] = [1.0]
    with pytest.raises(EventDecodeError, match="feature_names"):
        decode(orjson.dumps(wire), SignalSnapshot)


def test_naive_timestamps_are_rejected() -> None:
    wire = orjson.loads(encode(bar()))
    wire["ts_event"] = datetime(2026, 1, 1).isoformat()
    with pytest.raises(EventDecodeError) as info:
        decode(orjson.dumps(wire))
    assert info.value.field == "ts_event"


def test_json_schema_for_every_contract(tmp_path: object) -> None:
    schemas = json_schemas()
    assert set(schemas) == set(CONTRACTS)
    for body in schemas.values():
        assert "event_id" in body["properties"] and "schema" in body["properties"]


def test_schema_cli_writes_files(tmp_path: object) -> None:
    from click.testing import CliRunner

    from streams.contracts_cli import events

    out = tmp_path / "ev"  # type: ignore[operator]
    result = CliRunner().invoke(events, ["schema", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {f"{n}.schema.json" for n in CONTRACTS} | {
        "topics.json"
    }


def test_dead_letter_keeps_original_bytes() -> None:
    dl = every_contract()[-1]
    assert dl.payload() == b"\xffnot json"  # type: ignore[attr-defined]
    assert dataclasses.is_dataclass(TOPICS["bars"])
