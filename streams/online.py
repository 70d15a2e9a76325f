"""Batched pushes of stream features to the Feast online store."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from infra.contracts import FeatureUpdate
from streams.metrics import StreamMetrics

__all__ = ["OnlinePusher"]

log = logging.getLogger(__name__)


class OnlinePusher:
    """Keep the latest update per entity and push them to Feast in batches.

    The online store only holds the latest value of an entity, so a batch carries one
    row per (view, symbol, strategy): the most recent one added.
    """

    def __init__(self, store: Any, metrics: StreamMetrics | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self._pending: dict[tuple[str, str, str], FeatureUpdate] = {}
        self._lock = threading.Lock()
        self.rows_pushed = 0

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
            if self.metrics is not None:
                self.metrics.feast_push.observe(time.perf_counter() - start)
            self.rows_pushed += n
            return n

    def requeue(self, batch: list[FeatureUpdate]) -> None:
        """Put back rows whose push failed, unless newer rows arrived meanwhile."""
        for u in batch:
            self._pending.setdefault((u.feature_view, u.symbol, u.strategy), u)
