"""Batched pushes of stream features to the Feast online store.

`OnlinePusher.push_from_loop` is how the worker's event loop pushes: the Redis
round trip runs on the pusher's own thread while the loop waits for it, up to
`INLINE_WAIT_S`. A push on a thread that the loop does not wait for spends most
of its time waiting for the GIL: the loop folds records without pause, and each
time the push thread comes back from a socket call it waits up to the
interpreter's switch interval (5 ms) for its turn, several times per push. The
loop waiting on the push costs it the round trip (a fraction of a millisecond on
a healthy Redis, every `push_interval_s`); a slow or silent Redis costs it at
most `INLINE_WAIT_S`, after which the loop goes back to work and awaits the push
like any other future. While the loop waits, the interpreter's switch interval is
`PUSH_SWITCH_INTERVAL_S`, so the push thread also gets the GIL back quickly from
the worker's other busy thread (Faust's consumer thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable
from typing import IO, Any

from infra.contracts import FeatureUpdate
from streams.metrics import StreamMetrics

__all__ = ["INLINE_WAIT_S", "PUSH_SWITCH_INTERVAL_S", "PUSH_TIMINGS_ENV", "OnlinePusher"]

log = logging.getLogger(__name__)

#: The longest the event loop waits for a push before it goes back to work.
INLINE_WAIT_S = 0.02
#: The interpreter's switch interval while the loop waits for a push (default 5 ms).
PUSH_SWITCH_INTERVAL_S = 0.0005
#: The environment variable naming a file where every push's duration (seconds, one
#: line per push) is appended: the benchmarks read the distribution from it.
PUSH_TIMINGS_ENV = "TRADELOOP_PUSH_TIMINGS"


class OnlinePusher:
    """Keep the latest update per entity and push them to Feast in batches.

    The online store only holds the latest value of an entity, so a batch carries one
    row per (view, symbol, strategy): the most recent one added.
    """

    def __init__(
        self,
        store: Any,
        metrics: StreamMetrics | None = None,
        timings_path: str | None = None,
        inline_wait_s: float = INLINE_WAIT_S,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.inline_wait_s = inline_wait_s
        self._pending: dict[tuple[str, str, str], FeatureUpdate] = {}
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.rows_pushed = 0
        self.waited_out = 0  # pushes the loop stopped waiting for (slower than inline_wait_s)
        path = timings_path if timings_path is not None else os.environ.get(PUSH_TIMINGS_ENV)
        self._timings: IO[str] | None = open(path, "a", buffering=1) if path else None  # noqa: SIM115

    def add(self, updates: Iterable[Any]) -> None:
        """Queue feature updates (other events are ignored)."""
        for u in updates:
            if isinstance(u, FeatureUpdate):
                self._pending[(u.feature_view, u.symbol, u.strategy)] = u

    @property
    def pending(self) -> int:
        """Return the number of rows waiting."""
        return len(self._pending)

    def take(self) -> list[FeatureUpdate]:
        """Return and clear the waiting rows."""
        batch, self._pending = list(self._pending.values()), {}
        return batch

    def push(self, batch: list[FeatureUpdate]) -> int:
        """Push rows to Feast (blocking; one push at a time); return rows written."""
        if not batch:
            return 0
        with self._lock:
            start = time.perf_counter()
            n = int(self.store.push_updates(batch))
            elapsed = time.perf_counter() - start
            if self.metrics is not None:
                self.metrics.feast_push.observe(elapsed)
            if self._timings is not None:
                self._timings.write(f"{elapsed:.7f}\n")
            self.rows_pushed += n
            return n

    async def push_from_loop(self, batch: list[FeatureUpdate]) -> int:
        """Push rows from the event loop; return rows written (raises what the push raised).

        The push runs on the pusher's thread; the loop blocks on it for at most
        `inline_wait_s` (so the push thread does not queue for the GIL behind the
        loop; the switch interval is `PUSH_SWITCH_INTERVAL_S` meanwhile), then
        awaits the rest without blocking.
        """
        if not batch:
            return 0
        pool = self._pool()
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, PUSH_SWITCH_INTERVAL_S))
        try:
            fut = pool.submit(self.push, batch)
            done, _ = concurrent.futures.wait([fut], timeout=self.inline_wait_s)
        finally:
            sys.setswitchinterval(switch)
        if not done:
            self.waited_out += 1
            return await asyncio.wrap_future(fut)
        return fut.result()

    def warm(self) -> concurrent.futures.Future[None]:
        """Prepare the first push on the push thread (`store.warm_online`); failures are logged.

        The first push would otherwise connect to Redis and read the registry, and be
        the slowest of the run by tens of milliseconds.
        """
        return self._pool().submit(self._warm)

    def _warm(self) -> None:
        warm = getattr(self.store, "warm_online", None)
        if warm is None:
            return
        try:
            warm()
        except Exception as exc:  # the first push connects instead, and retries as usual
            log.warning(
                "online store warm-up failed (%s: %s); the first push connects",
                type(exc).__name__,
                str(exc)[:200],
            )

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="online-push"
            )
        return self._executor

    def requeue(self, batch: list[FeatureUpdate]) -> None:
        """Put back rows whose push failed, unless newer rows arrived meanwhile."""
        for u in batch:
            self._pending.setdefault((u.feature_view, u.symbol, u.strategy), u)

    def close(self) -> None:
        """Stop the push thread (after the push in progress) and close the timings file."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._timings is not None:
            self._timings.close()
            self._timings = None
