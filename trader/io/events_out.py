"""Write the engine's events (signals, order events, outcomes, bars) to an event lake with `infra.lake`.

Files follow DESIGN.md's layout, `{lake}/{topic}/date=YYYY-MM-DD/symbol=XX/
part-0-{first}-{last}.parquet`: partition 0 and, as offsets, a running sequence
per topic that continues after the highest offset already in the lake, so several
runs (sim, vendor) can write into one lake without overwriting each other.
"""

from __future__ import annotations

from typing import Any

from infra.contracts import Event, encode
from infra.lake import list_files, write_batch
from infra.objectstore import store_for_uri
from infra.settings import Settings

__all__ = ["LakeSink"]


class LakeSink:
    """An engine sink buffering rows per topic and writing parquet every `flush_rows`."""

    def __init__(
        self, lake: str, settings: Settings | None = None, *, flush_rows: int = 50_000
    ) -> None:
        self.lake = lake
        self.store = store_for_uri(lake, settings)
        self.flush_rows = flush_rows
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.next_offset: dict[str, int] = {}
        self.written = 0
        self.keys: list[str] = []

    def _first_offset(self, topic: str) -> int:
        files = list_files(self.store, topic)
        return max((int(f["last"]) for f in files), default=-1) + 1

    def __call__(self, topic: str, event: Event) -> None:
        offset = self.next_offset.get(topic)
        if offset is None:
            offset = self._first_offset(topic)
        self.next_offset[topic] = offset + 1
        row = event.to_dict()
        row["kafka_partition"] = 0
        row["kafka_offset"] = offset
        row["payload"] = encode(event)
        bucket = self.rows.setdefault(topic, [])
        bucket.append(row)
        if len(bucket) >= self.flush_rows:
            self._flush_topic(topic)

    def _flush_topic(self, topic: str) -> None:
        rows = self.rows.pop(topic, [])
        if rows:
            self.keys.extend(write_batch(self.store, topic, 0, rows))
            self.written += len(rows)

    def flush(self) -> list[str]:
        """Write everything buffered; return every key written so far."""
        for topic in list(self.rows):
            self._flush_topic(topic)
        return self.keys
