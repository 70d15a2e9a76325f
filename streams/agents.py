"""Thin Faust agents: each batch of records goes through `streams.processing.process_record`.

An agent takes the events Faust has buffered (up to `batch_max` or `batch_within_s`),
folds them in order, hands every changed state piece to the changelog once per batch
and emits the outputs; Faust acks the batch's events only after this returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from features.stream import StreamFeatureState
from infra.contracts import Event, encode
from infra.crash import CrashPoint, crash_point
from streams.metrics import StreamMetrics
from streams.processing import SOURCE_TOPICS, process_record
from streams.seeks import SEEK_TARGETS

__all__ = ["AgentHost", "handle_batch", "register_agents"]


class AgentHost(Protocol):
    """What the agents need of the worker (`streams.app.WorkerApp` provides it)."""

    app: Any
    topics: dict[str, Any]
    options: Any
    group_id: str
    state: StreamFeatureState
    metrics: StreamMetrics
    pusher: Any

    async def send(self, short: str, key: bytes, value: bytes) -> None: ...
    async def emit(self, event: Event) -> None: ...
    async def persist_changed(self) -> int: ...
    async def reread(self, short: str, topic: str, partition: int, offset: int) -> None: ...


async def handle_batch(worker: AgentHost, short: str, events: Sequence[Any]) -> None:
    """Validate, fold, persist, emit and queue the online pushes of Faust events.

    A record past a hole in its partition is not folded: the partition is read again
    from the first record missing (Faust acknowledges it anyway; commits stop at it).
    """
    outputs: list[Any] = []
    holes: dict[tuple[str, int], int] = {}
    skipped = 0
    for event in events:
        msg = event.message
        missing = SEEK_TARGETS.missing(msg.topic, msg.partition, msg.offset)
        if missing is not None:
            holes.setdefault((msg.topic, msg.partition), missing)
            skipped += 1
            continue
        ts = msg.timestamp
        result = process_record(
            worker.state,
            short,
            msg.topic,
            msg.partition,
            msg.offset,
            msg.key,
            msg.value,
            consumer=worker.group_id,
            timestamp_ms=int(ts * 1000) if ts else None,
        )
        if result.dead_letter is not None:
            await worker.send("dlq", msg.topic.encode(), encode(result.dead_letter))
            worker.metrics.dead_letters.labels(topic=short).inc()
            continue
        outputs.extend(result.outputs)
    await worker.persist_changed()  # before Faust acks the batch
    for out in outputs:
        await worker.emit(out)
    crash_point(CrashPoint.AGENTS_AFTER_CHANGELOG_BEFORE_COMMIT)  # Faust commits after us
    if worker.pusher is not None:
        worker.pusher.add(outputs)
    worker.metrics.events_in.labels(topic=short).inc(len(events) - skipped)  # folded, emitted
    for (topic, partition), offset in holes.items():
        await worker.reread(short, topic, partition, offset)


def register_agents(worker: AgentHost) -> None:
    """Attach one agent per source topic to the worker's Faust app."""
    for short in SOURCE_TOPICS:
        _agent(worker, short)


def _agent(worker: AgentHost, short: str) -> None:
    size, within = worker.options.batch_max, worker.options.batch_within_s

    async def agent(stream: Any) -> None:
        async for events in stream.take_events(size, within=within):
            # Faust acks a batch's events when this step returns, also when it is
            # cancelled (a graceful stop): finish folding and persisting the batch first,
            # or the stop's commit would cover events whose pieces were never sent
            step = asyncio.ensure_future(handle_batch(worker, short, events))
            try:
                await asyncio.shield(step)
            except asyncio.CancelledError:
                await step
                raise

    agent.__name__ = f"fold_{short}"
    agent.__qualname__ = f"fold_{short}"
    worker.app.agent(worker.topics[short], name=f"fold_{short}")(agent)
