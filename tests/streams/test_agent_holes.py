"""A record past a hole in its partition is not folded: the partition is read again."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from features.stream import StreamFeatureState
from infra.contracts import Event, encode, event_key, topic_for
from streams.agents import handle_batch
from streams.metrics import StreamMetrics
from streams.seeks import SEEK_TARGETS
from tests.helpers import unique
from tests.kit.harness import recompute
from tests.kit.synth import synthetic_events


@dataclass
class _Message:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp: float = 0.0


@dataclass
class _Event:
    message: _Message


@dataclass
class _Host:
    state: StreamFeatureState = field(default_factory=StreamFeatureState)
    metrics: StreamMetrics = field(default_factory=StreamMetrics)
    group_id: str = "g"
    pusher: Any = None
    app: Any = None
    topics: dict[str, Any] = field(default_factory=dict)
    options: Any = None
    emitted: list[Event] = field(default_factory=list)
    rereads: list[tuple[str, str, int, int]] = field(default_factory=list)

    async def send(self, short: str, key: bytes, value: bytes) -> None:
        raise AssertionError("no dead letters expected")

    async def emit(self, event: Event) -> None:
        self.emitted.append(event)

    async def persist_changed(self) -> int:
        return 0

    async def reread(self, short: str, topic: str, partition: int, offset: int) -> None:
        self.rereads.append((short, topic, partition, offset))


def _records(topic: str, bars: list[Event], offsets: list[int]) -> list[_Event]:
    return [_Event(_Message(topic, 0, o, event_key(bars[o]), encode(bars[o]))) for o in offsets]


def test_a_hole_is_not_folded_over_and_the_partition_is_read_again_from_it() -> None:
    bars = [e for e in synthetic_events(400, symbols=("ES",)) if topic_for(e) == "bars"][:12]
    topic = unique("bars")
    host = _Host()
    SEEK_TARGETS.set(topic, 0, 0)  # the seek after the partition was assigned
    try:
        asyncio.run(handle_batch(host, "bars", _records(topic, bars, [0, 1, 2, 6, 7])))
        assert host.rereads == [("bars", topic, 0, 3)]  # 3..5 were lost on their way
        assert len(host.emitted) == 3  # 6 and 7 were not folded over the hole
        assert SEEK_TARGETS.cap(topic, 0, 8) == 3  # no commit past the first record missing
        asyncio.run(handle_batch(host, "bars", _records(topic, bars, list(range(3, 12)))))
        assert host.rereads == [("bars", topic, 0, 3)]
        assert SEEK_TARGETS.cap(topic, 0, 12) == 12
        assert host.state.latest("b|ES") == recompute(bars).latest("b|ES")
    finally:
        SEEK_TARGETS.clear()
