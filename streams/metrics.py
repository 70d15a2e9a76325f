"""Prometheus metrics of the streams worker."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

__all__ = ["FEAST_PUSH_BUCKETS", "StreamMetrics"]

#: Bounds (seconds) of the online push histogram: fine below the 10 ms target, so a
#: p99 read from it is within a millisecond of the true one there.
FEAST_PUSH_BUCKETS = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.009,
    0.01, 0.0125, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


class StreamMetrics:
    """The worker's counters and histograms, on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "tradeloop_stream_events_in",
            "Records consumed by the streams worker.",
            ["topic"],
            registry=r,
        )
        self.events_out = Counter(
            "tradeloop_stream_events_out",
            "Events produced by the streams worker.",
            ["topic"],
            registry=r,
        )
        self.rereads = Counter(
            "tradeloop_stream_rereads",
            "Source partitions read again from a record lost before it was folded.",
            ["topic"],
            registry=r,
        )
        self.dead_letters = Counter(
            "tradeloop_dead_letters",
            "Records sent to the dead-letter topic.",
            ["topic"],
            registry=r,
        )
        self.lake_files = Counter(
            "tradeloop_lake_files_written",
            "Parquet files written to the event lake.",
            ["topic"],
            registry=r,
        )
        self.lake_events = Counter(
            "tradeloop_lake_events_written",
            "Events written to the event lake.",
            ["topic"],
            registry=r,
        )
        self.lake_retries = Counter(
            "tradeloop_lake_flush_retries", "Failed lake flushes that were retried.", registry=r
        )
        self.feast_push_failures = Counter(
            "tradeloop_feast_push_failures",
            "Online pushes that failed (the rows are kept and pushed again).",
            registry=r,
        )
        self.feast_push = Histogram(
            "tradeloop_feast_push_seconds",
            "Time of one Feast online push (a batch of rows).",
            buckets=FEAST_PUSH_BUCKETS,
            registry=r,
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve /metrics on a port (0 disables)."""
        if port:
            start_http_server(port, addr=host, registry=self.registry)
