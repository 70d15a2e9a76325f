"""Follow the streams worker's drift alerts so the operator console can show them.

The worker raises `DriftAlert`s on the `drift` topic; the trader only reads them. The
watcher starts a few records before the end of each partition (the recent alerts),
then follows new ones, handing each to a sink such as the console's feed. A record
that does not decode is skipped and counted; a broker outage is retried, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from infra.bus import BusConsumer, KafkaBus
from infra.contracts import DriftAlert, Event, EventDecodeError, decode, topic_of
from infra.offsets import true_end_offsets

__all__ = ["DriftWatcher"]

log = logging.getLogger(__name__)

#: Topic the watcher follows (the short name; the bus adds the prefix).
DRIFT_TOPIC = topic_of(DriftAlert)


class DriftWatcher:
    """Read `DriftAlert`s from the drift topic into `sink(topic, event)` until stopped."""

    def __init__(
        self,
        bus: KafkaBus,
        sink: Callable[[str, Event], None],
        *,
        recent: int = 10,
        poll_timeout_ms: int = 500,
        retry_ms: int = 5000,
    ) -> None:
        self.bus = bus
        self.sink = sink
        self.recent = recent
        self.poll_timeout_ms = poll_timeout_ms
        self.retry_ms = retry_ms
        self.alerts = 0
        self.skipped = 0
        self.connected = False
        self.last_error = ""

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the topic until `stop` is set; reconnect after any broker error."""
        while not stop.is_set():
            consumer = self.bus.consumer([self.bus.topic(DRIFT_TOPIC)], None, from_beginning=False)
            try:
                await consumer.start()
                await self._rewind(consumer)
                self.connected = True
                while not stop.is_set():
                    for record in await consumer.poll(timeout_ms=self.poll_timeout_ms):
                        self._accept(record.topic, record.partition, record.offset, record.value)
            except Exception as exc:  # the console goes without alerts; trading goes on
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("drift alerts: %s; retrying in %d ms", self.last_error, self.retry_ms)
            finally:
                self.connected = False
                with contextlib.suppress(Exception):
                    await consumer.stop()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.retry_ms / 1000)

    async def _rewind(self, consumer: BusConsumer) -> None:
        raw = consumer.raw
        parts = raw.assignment()
        if not parts:
            return
        # ListOffsets answers short on Tansu (see infra.offsets): probe the fetched end.
        ends = await true_end_offsets(self.bus, parts, await raw.end_offsets(list(parts)))
        for tp, end in ends.items():
            raw.seek(tp, max(0, end - self.recent))

    def _accept(self, topic: str, partition: int, offset: int, value: bytes | None) -> None:
        try:
            alert = decode(value or b"", DriftAlert)
        except EventDecodeError as exc:
            self.skipped += 1
            log.warning("drift alerts: skipped %s[%d]@%d: %s", topic, partition, offset, exc)
            return
        self.alerts += 1
        self.sink(DRIFT_TOPIC, alert)
