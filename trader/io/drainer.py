"""The outbox's drain thread: the spool to Kafka, in order, each record once.

See `trader.io.outbox` for the spool and the guarantees both keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition

from infra.bus import BusProducer, KafkaBus, topic_settings
from infra.crash import CrashPoint, crash_point
from infra.offsets import read_to_end
from trader.io.outbox import TRADER_TOPICS, Outbox

__all__ = ["RECOVERY_WINDOW", "DuplicateAnswerError", "OutboxDrainer"]

log = logging.getLogger(__name__)

#: Records per partition read back after a restart to find the ones already on Kafka.
RECOVERY_WINDOW = 5000


class DuplicateAnswerError(RuntimeError):
    """Raise when the broker answered records as sent before, without their offsets.

    Tansu saves a producer's sequence before the batch: killed in between, it answers
    the retried batch as a duplicate (which aiokafka reports as sent, offset -1) though
    it never wrote it.
    """

    def __init__(self, records: int) -> None:
        super().__init__(
            f"the broker answered {records} records as sent before, without offsets; "
            "they are looked for on Kafka before they are sent again"
        )


class OutboxDrainer:
    """A background thread that sends the spool to Kafka in order and commits acks."""

    def __init__(
        self,
        outbox: Outbox,
        bus: KafkaBus,
        *,
        batch: int = 500,
        retry_s: float = 1.0,
        send_timeout_s: float = 15.0,
        on_sent: Callable[[str, int], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.bus = bus
        self.batch = batch
        self.retry_s = retry_s
        self.send_timeout_s = send_timeout_s
        self.on_sent = on_sent
        self.link = "connecting"
        self.last_error = ""
        self.sent = 0
        self.failures = 0
        self.skipped = 0
        self.recovery_window = RECOVERY_WINDOW
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="outbox-drain", daemon=True)
        self._drain_deadline: float | None = None

    def start(self) -> OutboxDrainer:
        """Start the drain thread."""
        self._thread.start()
        return self

    def notify(self) -> None:
        """Wake the drainer (new records were appended)."""
        self._wake.set()

    def stop(self, drain_timeout_s: float = 10.0) -> bool:
        """Drain what is spooled for up to `drain_timeout_s`, then stop; return True if empty."""
        self._drain_deadline = time.monotonic() + drain_timeout_s
        self._stop.set()
        self._wake.set()
        self._thread.join(drain_timeout_s + self.send_timeout_s + 5.0)
        return self.outbox.depth == 0

    def wait_drained(self, timeout_s: float) -> bool:
        """Wait until the spool is empty (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.outbox.depth == 0:
                return True
            self._wake.set()
            time.sleep(0.02)
        return self.outbox.depth == 0

    def status(self) -> dict[str, Any]:
        """Return the link state for /healthz."""
        return {
            "link": self.link,
            "bootstrap": self.bus.bootstrap,
            "last_error": self.last_error,
            "sent": self.sent,
            "failures": self.failures,
            "skipped_already_sent": self.skipped,
        }

    def _main(self) -> None:
        asyncio.run(self._loop())

    def _stopping(self) -> bool:
        if not self._stop.is_set():
            return False
        return self.outbox.depth == 0 or (
            self._drain_deadline is not None and time.monotonic() > self._drain_deadline
        )

    async def _loop(self) -> None:
        producer: BusProducer | None = None
        try:
            while not self._stopping():
                if self.outbox.depth == 0:
                    await asyncio.to_thread(self._wake.wait, 0.2)
                    self._wake.clear()
                    continue
                if producer is None:
                    producer = await self._connect()
                    if producer is None:
                        await asyncio.to_thread(self._stop.wait, self.retry_s)
                        continue
                try:
                    await self._send_batch(producer)
                except Exception as exc:  # any send failure: reconnect and resend from the cursor
                    self.failures += 1
                    self.link = "down"
                    self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                    log.warning("outbox: send failed (%s); retrying", self.last_error)
                    await self._close(producer)
                    producer = None
                    await asyncio.to_thread(self._stop.wait, self.retry_s)
        finally:
            if producer is not None:
                await self._close(producer)
            self.link = "stopped"

    async def _connect(self) -> BusProducer | None:
        try:
            await asyncio.wait_for(
                self.bus.ensure_topics(topic_settings(self.bus, TRADER_TOPICS)),
                self.send_timeout_s,
            )
            producer = self.bus.producer(linger_ms=0, client_id="tradeloop-trader-outbox")
            await asyncio.wait_for(producer.start(), self.send_timeout_s)
        except Exception as exc:  # broker down or unreachable: keep spooling
            self.link = "down"
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return None
        try:  # a fresh producer: skip what an earlier one sent whose ack was lost
            await asyncio.wait_for(self.skip_already_sent(), self.send_timeout_s * 2)
        except Exception as exc:
            await self._close(producer)
            self.link = "down"
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return None
        self.link = "up"
        self.last_error = ""
        return producer

    async def skip_already_sent(self) -> int:
        """Commit the spool-head records Kafka already holds (same bytes); return how many.

        Only the batch that was in flight when a producer died can be on Kafka without
        a cursor entry; it is looked for among the last `recovery_window` records of each
        partition of its topics.
        """
        records = self.outbox.read(self.batch)
        if not records:
            return 0
        topics = {self.bus.topic(topic) for _, topic, _, _ in records}
        on_kafka = await self._tail_values(topics)
        already = [
            seq
            for seq, topic, _, value in records
            if value in on_kafka.get(self.bus.topic(topic), ())
        ]
        if already:
            log.warning(
                "outbox: %d spooled records were already on Kafka (an ack lost to a crash); "
                "not sending them again",
                len(already),
            )
            self.outbox.commit(already)
            self.skipped += len(already)
        return len(already)

    async def _tail_values(self, topics: set[str]) -> dict[str, set[bytes]]:
        """Return the values of the last `recovery_window` records of each partition.

        Read to the true end (`infra.offsets`): Tansu's ListOffsets answer can be many
        batches short, and a value missed here would be sent a second time.
        """
        reader = await self.bus.consumer((), None).start()
        try:
            await reader.raw.topics()
            tps = [
                TopicPartition(t, p)
                for t in topics
                for p in reader.raw.partitions_for_topic(t) or ()
            ]
        finally:
            await reader.stop()
        out: dict[str, set[bytes]] = {t: set() for t in topics}

        def keep(records: list[Any]) -> None:
            out[records[0].topic].update(r.value for r in records if r.value is not None)

        await read_to_end(
            self.bus, tps, keep, last=self.recovery_window, timeout_s=self.send_timeout_s
        )
        return out

    async def _close(self, producer: BusProducer) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 5.0)

    async def _send_batch(self, producer: BusProducer) -> None:
        records = self.outbox.read(self.batch)
        if not records:
            return
        # enqueue in spool order on the underlying aiokafka producer, then collect
        # each record's ack separately so a partial failure commits exactly the acked ones
        raw = producer._producer
        futures = []
        for _, topic, key, value in records:
            futures.append(await raw.send(self.bus.topic(topic), value=value, key=key))
        done, _pending = await asyncio.wait(futures, timeout=self.send_timeout_s)
        acked: list[int] = []
        counts: dict[str, int] = {}
        failure: BaseException | None = None
        # a batch answered as a duplicate gets offsets from -1 and proves nothing: from it
        # on, a partition's records are looked for on Kafka after the reconnect instead
        unproven: dict[tuple[str, int], int] = {}
        for (seq, topic, _, _), fut in zip(records, futures, strict=True):
            if fut in done and not fut.cancelled() and fut.exception() is None:
                meta = fut.result()
                where = (meta.topic, meta.partition)
                if meta.offset < 0 or where in unproven:
                    unproven[where] = unproven.get(where, 0) + 1
                    continue
                acked.append(seq)
                counts[topic] = counts.get(topic, 0) + 1
            elif failure is None:
                failure = (
                    fut.exception()
                    if fut in done and not fut.cancelled()
                    else TimeoutError(f"no ack within {self.send_timeout_s}s")
                )
        if unproven and failure is None:
            failure = DuplicateAnswerError(sum(unproven.values()))
        crash_point(CrashPoint.OUTBOX_AFTER_ACK_BEFORE_CURSOR)
        self.outbox.commit(acked)
        self.sent += len(acked)
        if self.on_sent is not None:
            for topic, n in counts.items():
                self.on_sent(topic, n)
        if failure is not None:
            raise failure
