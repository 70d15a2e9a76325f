"""The pure step every record goes through, live (agents) and in replay."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from features.stream import Output, Source, StreamFeatureState, derived_id
from infra.contracts import DeadLetter, Event
from streams.validate import Rejected, validate_record

__all__ = ["Processed", "process_record"]

SOURCE_TOPICS: tuple[str, ...] = ("bars", "signals", "outcomes")


@dataclass(slots=True)
class Processed:
    """What one record produced: a dead letter, or the event and its outputs."""

    event: Event | None = None
    dead_letter: DeadLetter | None = None
    outputs: list[Output] = field(default_factory=list)


def process_record(
    state: StreamFeatureState,
    short_topic: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    *,
    consumer: str = "",
    timestamp_ms: int | None = None,
) -> Processed:
    """Validate a record and fold it into the stream features.

    Folding is exactly-once per (topic, partition, offset): a record seen again
    (after a crash) returns its key's latest outputs without changing the state.
    Dead letters get an id derived from the record's position, so a re-read record
    yields the same dead letter.
    """
    checked = validate_record(short_topic, topic, partition, offset, key, value, consumer)
    if isinstance(checked, Rejected):
        update: dict[str, object] = {"event_id": derived_id(f"{topic}:{partition}:{offset}", "dlq")}
        if timestamp_ms is not None and timestamp_ms >= 0:
            update["ts_event"] = dt.datetime.fromtimestamp(timestamp_ms / 1000, tz=dt.UTC)
        return Processed(dead_letter=checked.dead_letter.model_copy(update=update))
    outputs = state.learn(checked, Source(topic, partition, offset))  # type: ignore[arg-type]
    return Processed(event=checked, outputs=outputs)
