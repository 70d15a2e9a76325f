"""Topic specs: each topic's short name, contract, key and retention, spelled once."""

from __future__ import annotations

from dataclasses import dataclass

from infra.contracts.events import (
    CONTRACTS,
    Bar,
    DeadLetter,
    DriftAlert,
    Event,
    FeatureUpdate,
    ModelManifest,
    SignalSnapshot,
    TradeOutcome,
    VenueEvent,
)

__all__ = ["LAKE_TOPICS", "TOPICS", "TopicSpec", "event_key", "topic_for", "topic_of"]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic's short name, its contract and its broker config."""

    name: str
    contract: type[Event]
    key: str
    compacted: bool = False

    @property
    def contracts(self) -> tuple[type[Event], ...]:
        """Return the contracts this topic carries (`orders`: every order event)."""
        if self.contract in CONTRACTS.values():
            return (self.contract,)
        return tuple(c for c in CONTRACTS.values() if issubclass(c, self.contract))

    def config(self, retention_ms: int) -> dict[str, str]:
        """Return the topic config for topic creation."""
        if self.compacted:
            return {"cleanup.policy": "compact"}
        return {"cleanup.policy": "delete", "retention.ms": str(retention_ms)}


TOPICS: dict[str, TopicSpec] = {
    s.name: s
    for s in (
        TopicSpec("bars", Bar, key="symbol"),
        TopicSpec("signals", SignalSnapshot, key="symbol"),
        TopicSpec("orders", VenueEvent, key="symbol"),
        TopicSpec("outcomes", TradeOutcome, key="symbol"),
        TopicSpec("features", FeatureUpdate, key="symbol"),
        TopicSpec("drift", DriftAlert, key="symbol"),
        TopicSpec("models", ModelManifest, key="model_set", compacted=True),
        TopicSpec("dlq", DeadLetter, key="source_topic"),
    )
}


def event_key(event: Event) -> bytes:
    """Return the partition key of an event: its symbol (a manifest: its model set)."""
    for attr in ("symbol", "model_set", "source_topic"):
        value = getattr(event, attr, None)
        if value:
            return str(value).encode()
    return event.event_id.encode()


_TOPIC_OF: dict[type[Event], str] = {}


def topic_for(event: Event) -> str:
    """Return the short topic name an event belongs on."""
    return topic_of(type(event))


def topic_of(cls: type[Event]) -> str:
    """Return the short topic name that carries a contract (or its subclasses)."""
    name = _TOPIC_OF.get(cls)
    if name is None:
        for spec in TOPICS.values():
            if issubclass(cls, spec.contract):
                name = _TOPIC_OF[cls] = spec.name
                break
        else:
            raise KeyError(f"no topic carries {cls.__name__}")
    return name


#: Topics the streams worker sinks to the lake (every topic but the compacted `models`).
LAKE_TOPICS: tuple[str, ...] = tuple(n for n, s in TOPICS.items() if not s.compacted)
