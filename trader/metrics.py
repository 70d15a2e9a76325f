"""Prometheus metrics of the trader (names are a contract: dashboards use them).

All live on `REGISTRY` (not the global default, so several engines in one
process, e.g. tests, never collide); `/metrics` renders it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = [
    "DECISIONS",
    "DECISION_LATENCY",
    "EVENTS_OUT",
    "MODEL_AGE",
    "MODEL_REJECTIONS",
    "MODEL_RELEASE",
    "MODEL_SWAPS",
    "MODEL_SWAP_ERRORS",
    "OUTBOX_DEPTH",
    "PNL",
    "REGISTRY",
    "VENUE_SILENCES",
    "render",
    "set_release",
]

REGISTRY = CollectorRegistry(auto_describe=True)

DECISIONS = Counter(
    "tradeloop_decisions",
    "Candidate signals decided, by symbol, strategy, decision path and whether taken.",
    ["symbol", "strategy", "path", "taken"],
    registry=REGISTRY,
)
DECISION_LATENCY = Histogram(
    "tradeloop_decision_latency_seconds",
    "Time of one decision (features, models, sizing, risk).",
    buckets=(10e-6, 25e-6, 50e-6, 75e-6, 100e-6, 150e-6, 250e-6, 500e-6, 1e-3, 5e-3, 25e-3),
    registry=REGISTRY,
)
OUTBOX_DEPTH = Gauge(
    "tradeloop_outbox_depth", "Events spooled but not yet acknowledged by Kafka.", registry=REGISTRY
)
OUTBOX_WRITE_FAILING = Gauge(
    "tradeloop_outbox_write_failing",
    "1 while the spool cannot write (a full disk): no new positions are opened.",
    registry=REGISTRY,
)
OUTBOX_HELD = Gauge(
    "tradeloop_outbox_held",
    "Events held in memory because the spool cannot write them.",
    registry=REGISTRY,
)
EVENTS_OUT = Counter(
    "tradeloop_events_out", "Events acknowledged by Kafka, by topic.", ["topic"], registry=REGISTRY
)
MODEL_RELEASE = Gauge(
    "tradeloop_model_release_info",
    "The serving model release (value 1).",
    ["release"],
    registry=REGISTRY,
)
MODEL_AGE = Gauge(
    "tradeloop_model_age_seconds",
    "Seconds since the serving models were loaded.",
    registry=REGISTRY,
)
MODEL_SWAPS = Counter("tradeloop_model_swaps", "Model set swaps.", registry=REGISTRY)
MODEL_REJECTIONS = Counter(
    "tradeloop_model_rejections",
    "Rejected model releases, by reason.",
    ["reason"],
    registry=REGISTRY,
)
MODEL_SWAP_ERRORS = Counter(
    "tradeloop_model_swap_errors",
    "Errors caught in the hot-swap loop (broker, object store, verification), by kind.",
    ["kind"],
    registry=REGISTRY,
)
PNL = Gauge(
    "tradeloop_pnl_usd",
    "Realised PnL of real trades this run, by symbol.",
    ["symbol"],
    registry=REGISTRY,
)
VENUE_SILENCES = Counter(
    "tradeloop_venue_silences",
    "Venue or feed connections closed and opened again because nothing arrived within the"
    " silence bound while the websocket stayed open, by venue and plant.",
    ["venue", "plant"],
    registry=REGISTRY,
)


def set_release(release: str) -> None:
    """Mark `release` as the serving one (the info gauge keeps only it)."""
    MODEL_RELEASE.clear()
    MODEL_RELEASE.labels(release=release).set(1)


def render() -> bytes:
    """Return the text exposition of every trader metric."""
    return generate_latest(REGISTRY)
