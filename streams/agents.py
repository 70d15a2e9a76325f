"""Thin Faust agents: each record goes through `streams.processing.process_record`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from features.stream import key_for
from streams.events import encode
from streams.processing import SOURCE_TOPICS, process_record

if TYPE_CHECKING:
    from streams.app import WorkerApp

__all__ = ["handle", "register_agents"]


async def handle(worker: WorkerApp, short: str, event: Any) -> None:
    """Validate, fold, emit and queue the online push of one Faust event."""
    msg = event.message
    worker.metrics.events_in.labels(topic=short).inc()
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
        dl = result.dead_letter
        await worker.send("dlq", msg.topic.encode(), encode(dl))
        worker.metrics.dead_letters.labels(topic=short).inc()
        return
    assert result.event is not None
    await worker.persist_state(key_for(result.event))  # type: ignore[arg-type]  # before the ack
    for out in result.outputs:
        await worker.emit(out)
    if worker.pusher is not None:
        worker.pusher.add(result.outputs)


def register_agents(worker: WorkerApp) -> None:
    """Attach one agent per source topic to the worker's Faust app."""
    for short in SOURCE_TOPICS:
        _agent(worker, short)


def _agent(worker: WorkerApp, short: str) -> None:
    async def agent(stream: Any) -> None:
        async for event in stream.events():
            await handle(worker, short, event)

    agent.__name__ = f"fold_{short}"
    agent.__qualname__ = f"fold_{short}"
    worker.app.agent(worker.topics[short], name=f"fold_{short}")(agent)
