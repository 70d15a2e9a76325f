"""Validate raw records against their topic's contract: an event, or a dead letter."""

from __future__ import annotations

from dataclasses import dataclass

from infra.contracts import TOPICS, DeadLetter, Event, EventDecodeError, decode, event_key

__all__ = ["KeyMismatchError", "Rejected", "validate_record"]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that failed validation, as the dead letter to publish."""

    dead_letter: DeadLetter


class KeyMismatchError(ValueError):
    """Raise when a record's Kafka key is not the key its event must carry."""


def validate_record(
    short_topic: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    consumer: str = "",
) -> Event | Rejected:
    """Decode a record of `short_topic`; return the event, or `Rejected` with the dead letter.

    A record is dead-lettered when it is empty, not JSON, not the topic's contract,
    or keyed differently from its event (a wrong key puts it on the wrong partition).
    """
    spec = TOPICS.get(short_topic)
    error: BaseException
    if spec is None:
        error = KeyError(f"no contract for topic {short_topic!r}")
    elif value is None:
        error = EventDecodeError(spec.contract.SCHEMA_NAME, "<root>", "empty record (tombstone)")
    else:
        try:
            event = decode(value, spec.contract)
        except EventDecodeError as exc:
            error = exc
        except Exception as exc:  # any decoder failure is bad input, never a crash
            error = exc
        else:
            expected = event_key(event)
            if key is not None and key != expected:
                error = KeyMismatchError(
                    f"record key {key[:64]!r} is not the event's key {expected[:64]!r}"
                )
            else:
                return event
    return Rejected(
        DeadLetter.from_record(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            error=error,
            consumer=consumer,
        )
    )
