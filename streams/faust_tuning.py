"""Faust's per-message path, tuned: what the worker and the bench's Faust ceiling share.

Three changes, measured in `bench/bench_stream.py` (see docs/benchmarks.md):

- `FAUST_OPTIONS`: larger fetches and stream buffers, so a partition is not paused
  and resumed every few thousand records.
- `QuietMonitor`: Faust's monitor keeps per-message statistics (timestamps, deques,
  counters per topic) for its web views; the worker exports its own Prometheus
  counters, so the per-message hooks do nothing. Commit, rebalance and buffer-full
  statistics are kept.
- `install_batched_drain`: Faust's fetcher hands every record to the conductor in
  a `wait_first(callback, suspend_flow)` race, which creates four tasks per record
  (the callback, the suspend event, the stopped and crashed events). The batched
  drain races the suspend event once per chunk of records and delivers the chunk's
  records one after the other inside that one task: a rebalance still cancels the
  delivery between two records, the read offsets and gap tracking are kept per record.
  Records a fetch returned before a partition's last seek are dropped
  (`streams.seeks`), so they cannot run ahead of the records the seek fetches.
- `use_uvloop`: the event loops (Faust's and its consumer thread's) are uvloop's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from faust.sensors.monitor import Monitor

from streams.seeks import SEEK_TARGETS

__all__ = [
    "DRAIN_CHUNK",
    "FAUST_OPTIONS",
    "QuietMonitor",
    "install_batched_drain",
    "tune_faust",
    "use_uvloop",
]

log = logging.getLogger(__name__)

DRAIN_CHUNK = 256  # records delivered per suspend-flow race

FAUST_OPTIONS: dict[str, Any] = {
    "broker_max_poll_records": 5000,
    "consumer_max_fetch_size": 4 * 1024 * 1024,
    "stream_buffer_maxsize": 32_768,
}


class QuietMonitor(Monitor):
    """Faust's monitor without per-message bookkeeping (the worker has its own counters)."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        """Skip per-message statistics."""

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        """Skip per-event statistics."""
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        """Skip per-event statistics."""

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        """Skip per-message statistics."""

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> Any:
        """Skip per-send statistics."""
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        """Skip per-send statistics."""

    def on_table_get(self, table: Any, key: Any) -> None:
        """Skip per-key statistics."""

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        """Skip per-key statistics."""


async def _drain_batched(self: Any, fetcher: Any) -> None:
    """Faust's `Consumer._drain_messages`, racing the suspend event once per chunk."""
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    acks_enabled_for = self.app.topics.acks_enabled_for
    app = self.app
    targets = SEEK_TARGETS
    delivered = targets.delivered

    async def deliver(chunk: list[tuple[Any, Any]], generation: int) -> None:
        for tp, message in chunk:
            if not self.flow_active or app.consumer_generation_id != generation:
                return  # a rebalance began: the rest is fetched again after it
            offset = message.offset
            if targets and not targets.admit(tp.topic, tp.partition, offset):
                continue  # fetched before the partition's last seek
            r_offset = get_read_offset(tp)
            if r_offset is None or offset >= r_offset:
                gap = offset - (r_offset or 0)
                if gap > 1 and r_offset and acks_enabled_for(message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                commit_every = self._commit_every
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                await callback(message)
                set_read_offset(tp, offset)
                delivered[tp] = offset

    async def chunks(ait: AsyncIterator[tuple[Any, Any]]) -> AsyncIterator[list[Any]]:
        chunk: list[tuple[Any, Any]] = []
        async for item in ait:
            chunk.append(item)
            if len(chunk) >= DRAIN_CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    while not (consumer_should_stop() or fetcher_should_stop()):
        ait = getmany(timeout=1.0)
        await self.sleep(0)
        if self.should_stop:
            continue
        async for chunk in chunks(ait):
            await self.wait_first(
                deliver(chunk, app.consumer_generation_id), self.suspend_flow.wait()
            )
            await asyncio.sleep(0)


def install_batched_drain() -> None:
    """Make Faust's aiokafka consumer deliver fetched records in chunks (idempotent)."""
    from faust.transport.consumer import Consumer

    if getattr(Consumer._drain_messages, "_tradeloop_batched", False):
        return
    original = Consumer._drain_messages

    async def _drain_messages(self: Any, fetcher: Any) -> None:
        try:
            await _drain_batched(self, fetcher)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    _drain_messages._tradeloop_batched = True  # type: ignore[attr-defined]
    _drain_messages._original = original  # type: ignore[attr-defined]
    Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]


def use_uvloop() -> None:
    """Run asyncio (Faust's loop and its consumer thread's) on uvloop."""
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def tune_faust() -> dict[str, Any]:
    """Apply the process-wide tuning and return the `faust.App` options that go with it."""
    use_uvloop()
    install_batched_drain()
    return {**FAUST_OPTIONS, "Monitor": QuietMonitor}
