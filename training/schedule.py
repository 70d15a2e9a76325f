"""When to train: once, every interval, and at once (debounced) when drift is detected.

`train_loop` runs `runner()` on a fixed cadence; a `DriftAlert` on the `drift`
topic starts a run early, after `debounce_s` of quiet (a burst of alerts gives one
run), and never sooner than `min_gap_s` after the previous run started. A skip
switch (the seed's `SKIP_TRAINING` file, `SKIP_TRAINING_FILE`) makes every due run a
logged no-op while it exists. A failed run is logged and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.bus import topic_settings
from infra.settings import Settings
from infra.timeutil import parse_duration

__all__ = ["LoopStats", "parse_duration", "skip_switch", "train_loop"]

log = logging.getLogger(__name__)


def skip_switch(settings: Settings) -> Path | None:
    """Return the skip file if it exists (training is switched off), else None."""
    path = Path(settings.skip_training_file)
    return path if settings.skip_training_file and path.exists() else None


@dataclass
class LoopStats:
    """What the loop did: runs by trigger, skips, failures and alerts seen."""

    runs: list[str] = field(default_factory=list)
    skipped: int = 0
    failed: int = 0
    alerts: int = 0


async def _drift_listener(
    settings: Settings, on_alert: Callable[[Any], None], ready: asyncio.Event
) -> None:
    """Consume the drift topic from its end and call `on_alert` per DriftAlert."""
    from infra.bus import KafkaBus
    from infra.contracts import DriftAlert, EventDecodeError, decode

    bus = KafkaBus(settings)
    await bus.ensure_topics(topic_settings(bus, ["drift"]))
    consumer = bus.consumer(
        [bus.topic("drift")],
        group_id=f"tradeloop-train-{uuid.uuid4().hex[:8]}",
        from_beginning=False,
    )
    await consumer.start()
    try:
        while not consumer.raw.assignment():
            await consumer.poll(timeout_ms=200)
        for tp in consumer.raw.assignment():
            await consumer.raw.seek_to_end(tp)
            await consumer.raw.position(tp)
        ready.set()
        while True:
            for rec in await consumer.poll(timeout_ms=500):
                try:
                    ev: Any = decode(rec.value or b"")
                except EventDecodeError as exc:
                    log.warning("drift topic: undecodable record at offset %s: %s", rec.offset, exc)
                    continue
                if isinstance(ev, DriftAlert):
                    on_alert(ev)
    finally:
        await consumer.stop()


async def train_loop(
    settings: Settings,
    runner: Callable[[str], Any],
    *,
    every_s: float,
    drift: bool = True,
    debounce_s: float = 30.0,
    min_gap_s: float = 60.0,
    max_runs: int | None = None,
    stop: asyncio.Event | None = None,
    listening: asyncio.Event | None = None,
) -> LoopStats:
    """Run `runner(trigger)` every `every_s` and on drift; return when `stop` is set or after `max_runs`."""
    stats = LoopStats()
    stop = stop or asyncio.Event()
    wake = asyncio.Event()
    ready = listening or asyncio.Event()
    last_alert = [0.0]

    def on_alert(alert: Any) -> None:
        stats.alerts += 1
        last_alert[0] = time.monotonic()
        log.info(
            "drift alert %s/%s %s: training will start after %.0fs of quiet",
            alert.symbol,
            alert.strategy,
            alert.metric,
            debounce_s,
        )
        wake.set()

    listener: asyncio.Task[None] | None = None
    if drift:
        listener = asyncio.create_task(_drift_listener(settings, on_alert, ready))
    else:
        ready.set()
    next_due = time.monotonic()
    last_run = -1e18
    pending_drift = False
    try:
        while not stop.is_set():
            if listener is not None and listener.done() and listener.exception() is not None:
                log.error(
                    "drift listener stopped: %s; continuing on the schedule only",
                    listener.exception(),
                )
                listener = None
            now = time.monotonic()
            trigger = ""
            if wake.is_set():
                pending_drift = True
                wake.clear()
            if pending_drift and now - last_alert[0] >= debounce_s and now - last_run >= min_gap_s:
                trigger = "drift"
            elif now >= next_due:
                trigger = "schedule"
            if trigger:
                pending_drift = False
                last_run = now
                next_due = now + every_s
                if skip_switch(settings) is not None:
                    stats.skipped += 1
                    log.info(
                        "skip switch %s exists: %s run skipped",
                        settings.skip_training_file,
                        trigger,
                    )
                else:
                    stats.runs.append(trigger)
                    try:
                        await asyncio.to_thread(runner, trigger)
                    except Exception:
                        stats.failed += 1
                        log.exception("training run (%s) failed; the loop goes on", trigger)
                    if max_runs is not None and len(stats.runs) >= max_runs:
                        break
                continue
            timeout = max(0.05, min(next_due - time.monotonic(), 1.0))
            if pending_drift:
                timeout = min(timeout, 0.2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)
    finally:
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
    return stats
