"""Pure aggregation behind `tradeloop monitor`: records in, a JSON-ready snapshot out.

Nothing here touches a broker, a clock or the network: callers pass `now` and the
broker facts (end offsets, committed offsets), so every number is testable.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from features.trade_stats import TradeAccumulator, TradeStatsError
from infra.contracts import (
    TOPICS,
    DeadLetter,
    DriftAlert,
    Event,
    EventDecodeError,
    ModelManifest,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    TradeOutcome,
    VenueEvent,
    decode,
)
from infra.timeutil import parse_time

__all__ = [
    "LagRow",
    "MonitorState",
    "compute_lag",
    "day_start",
    "parse_since",
    "parse_trader_metrics",
    "summarize_trader",
]

#: How many dead letters and drift alerts the snapshot keeps.
LATEST_N = 10
#: The topics whose records the monitor decodes (the others it only counts).
DECODED = frozenset(TOPICS) - {"bars", "signals", "features"}


def parse_since(text: str, now: datetime) -> datetime:
    """Return the UTC time meant by `--from`: `15m`, `2h`, `1d` (ago) or an ISO time."""
    when = parse_time(text, now, what="--from")
    if when is None:
        raise ValueError("--from '': expected a duration such as 15m or an ISO time")
    return when


def day_start(now: datetime) -> datetime:
    """Return midnight UTC of the day `now` falls in."""
    d = now.astimezone(UTC).date()
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat() if ts is not None else None


@dataclass(frozen=True, slots=True)
class LagRow:
    """The lag of one consumer group on one partition."""

    group: str
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        """Return how many records the group has still to process (never negative)."""
        return max(0, self.end - self.committed)


def compute_lag(
    committed: dict[str, dict[tuple[str, int], int]],
    end_offsets: dict[tuple[str, int], int],
) -> list[LagRow]:
    """Return per-partition lag rows for every group with a committed offset.

    `committed` maps group -> (topic, partition) -> next offset to read; entries
    below zero mean "nothing committed" and are left out, as are partitions whose
    end offset is unknown.
    """
    rows = []
    for group in sorted(committed):
        for (topic, partition), offset in sorted(committed[group].items()):
            if offset < 0 or (topic, partition) not in end_offsets:
                continue
            rows.append(LagRow(group, topic, partition, offset, end_offsets[(topic, partition)]))
    return rows


def _pnl_row(acc: TradeAccumulator) -> dict[str, Any]:
    win_rate, avg_r = acc.win_rate, acc.avg_r
    return {
        "trades": acc.trades,
        "wins": acc.wins,
        "win_rate": None if win_rate is None else round(win_rate, 6),
        "pnl_usd": round(acc.pnl_usd, 2),
        "avg_r": None if avg_r is None else round(avg_r, 6),
    }


@dataclass
class MonitorState:
    """Everything the monitor has seen, folded into counters as records arrive.

    `day` is the UTC date whose real (non-counterfactual) trades make up the PnL;
    a trade belongs to the day its `exit_ts` falls in. Outcomes are deduplicated by
    `event_id` (Kafka delivers at least once).
    """

    day: date
    rate_window_s: float = 60.0
    topics: dict[str, int] = field(default_factory=dict)
    last_ts: dict[str, datetime] = field(default_factory=dict)
    decode_errors: Counter[str] = field(default_factory=Counter)
    covered_since: dict[str, datetime] = field(default_factory=dict)
    _per_second: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    dead_letters: Counter[str] = field(default_factory=Counter)
    latest_dead: deque[DeadLetter] = field(default_factory=lambda: deque(maxlen=LATEST_N))
    drift_count: int = 0
    latest_drift: deque[DriftAlert] = field(default_factory=lambda: deque(maxlen=LATEST_N))
    manifests_seen: int = 0
    manifest: ModelManifest | None = None
    counterfactuals: int = 0
    _pnl: dict[tuple[str, str], TradeAccumulator] = field(default_factory=dict)
    _pnl_by_symbol: dict[str, TradeAccumulator] = field(default_factory=dict)
    _pnl_total: TradeAccumulator = field(default_factory=TradeAccumulator)
    _seen_outcomes: set[str] = field(default_factory=set)
    order_events: Counter[str] = field(default_factory=Counter)
    working: dict[str, dict[str, Any]] = field(default_factory=dict)
    latest_fills: deque[OrderFilled] = field(default_factory=lambda: deque(maxlen=LATEST_N))
    _seen_orders: deque[str] = field(default_factory=lambda: deque(maxlen=10_000))

    def observe(self, topic: str, value: bytes | None, timestamp_ms: int) -> None:
        """Fold one record of a short topic name (`outcomes`, `dlq`, ...) in.

        A record that does not decode is counted under `decode_errors`, never raised.
        """
        self.topics[topic] = self.topics.get(topic, 0) + 1
        ts_s = timestamp_ms / 1000.0
        self._per_second[topic][int(ts_s)] += 1
        ts = datetime.fromtimestamp(ts_s, UTC)
        if topic not in self.last_ts or ts > self.last_ts[topic]:
            self.last_ts[topic] = ts
        if topic not in DECODED:
            return
        if value is None:
            if topic != "models":  # a tombstone on the compacted topic is legal
                self.decode_errors[topic] += 1
            return
        try:
            event: Event = decode(value)
        except EventDecodeError:
            self.decode_errors[topic] += 1
            return
        if isinstance(event, TradeOutcome) and topic == "outcomes":
            self._outcome(event)
        elif isinstance(event, VenueEvent) and topic == "orders":
            self._order(event)
        elif isinstance(event, DeadLetter) and topic == "dlq":
            self.dead_letters[event.source_topic] += 1
            self.latest_dead.append(event)
        elif isinstance(event, DriftAlert) and topic == "drift":
            self.drift_count += 1
            self.latest_drift.append(event)
        elif isinstance(event, ModelManifest) and topic == "models":
            self.manifests_seen += 1
            if self.manifest is None or event.sequence >= self.manifest.sequence:
                self.manifest = event
        else:
            self.decode_errors[topic] += 1

    def _outcome(self, outcome: TradeOutcome) -> None:
        if outcome.counterfactual:
            self.counterfactuals += 1
            return
        if outcome.exit_ts.astimezone(UTC).date() != self.day:
            return
        if outcome.event_id in self._seen_outcomes:
            return
        accs = (
            self._pnl.setdefault((outcome.symbol, outcome.strategy), TradeAccumulator()),
            self._pnl_by_symbol.setdefault(outcome.symbol, TradeAccumulator()),
            self._pnl_total,
        )
        try:
            for acc in accs:
                acc.add(outcome.pnl_usd, outcome.r_multiple)
        except TradeStatsError:  # a NaN PnL decodes; it is bad input, not a trade
            self.decode_errors["outcomes"] += 1
            return
        self._seen_outcomes.add(outcome.event_id)

    def _order(self, e: VenueEvent) -> None:
        """Fold an order event: working orders by client order id, the latest fills."""
        if e.event_id in self._seen_orders:
            return
        self._seen_orders.append(e.event_id)
        self.order_events[e.SCHEMA_NAME] += 1
        if isinstance(e, OrderSubmitted):
            self.working[e.client_order_id] = {
                "client_order_id": e.client_order_id,
                "venue": e.venue,
                "symbol": e.symbol,
                "contract": e.contract,
                "role": e.role,
                "side": e.side,
                "quantity": e.quantity,
                "filled": 0,
                "type": e.order_type,
                "price": e.limit_price if e.limit_price is not None else e.stop_price,
                "since": _iso(e.ts_event),
            }
        elif isinstance(e, OrderAccepted) and e.client_order_id in self.working:
            w = self.working[e.client_order_id]
            w["quantity"] = e.quantity
            w["price"] = e.limit_price if e.limit_price is not None else e.stop_price
        elif isinstance(e, OrderFilled):
            self.latest_fills.append(e)
            filled = self.working.get(e.client_order_id)
            if filled is not None:
                filled["filled"] = e.cumulative_quantity
                if e.leaves_quantity == 0:
                    del self.working[e.client_order_id]
        elif isinstance(e, OrderRejected | OrderCancelled | OrderExpired):
            self.working.pop(e.client_order_id, None)

    def orders(self) -> dict[str, Any]:
        """Return the working orders and the latest fills seen on `orders`."""
        return {
            "working": sorted(self.working.values(), key=lambda w: (w["symbol"], w["since"] or "")),
            "latest_fills": [_fill(f) for f in reversed(self.latest_fills)],
            "events": dict(sorted(self.order_events.items())),
        }

    def roll_day(self, day: date) -> None:
        """Start a new PnL day (outcomes of the old day are forgotten)."""
        self.day = day
        self._pnl.clear()
        self._pnl_by_symbol.clear()
        self._pnl_total = TradeAccumulator()
        self._seen_outcomes.clear()

    def rate(self, topic: str, now: datetime) -> float:
        """Return messages per second of a topic over the trailing window, by record time.

        The window shrinks to the time the monitor has covered (`covered_since`), so a
        monitor started two seconds ago does not divide two seconds of records by 60.
        """
        buckets = self._per_second.get(topic)
        if not buckets:
            return 0.0
        now_s = now.timestamp()
        cutoff = int(now_s - self.rate_window_s)
        for second in [s for s in buckets if s < cutoff]:
            del buckets[second]  # keep memory bounded by the window
        span = self.rate_window_s
        since = self.covered_since.get(topic)
        if since is not None:
            span = min(span, max(now_s - since.timestamp(), 1.0))
        first = now_s - span
        return sum(n for s, n in buckets.items() if s + 1 > first) / span

    def pnl(self) -> dict[str, Any]:
        """Return today's real-trade PnL, win rate and average R per symbol and strategy."""
        rows = [
            {"symbol": sym, "strategy": strat, **_pnl_row(acc)}
            for (sym, strat), acc in sorted(self._pnl.items())
        ]
        return {
            "day": self.day.isoformat(),
            "by_symbol_strategy": rows,
            "by_symbol": {sym: _pnl_row(acc) for sym, acc in sorted(self._pnl_by_symbol.items())},
            "total": _pnl_row(self._pnl_total),
            "counterfactuals_ignored": self.counterfactuals,
        }

    def models(self, now: datetime) -> dict[str, Any]:
        """Return the latest release published on `models` and its age."""
        m = self.manifest
        if m is None:
            return {"latest": None, "manifests_seen": self.manifests_seen}
        return {
            "latest": {
                "release": m.release,
                "sequence": m.sequence,
                "kind": m.kind,
                "model_set": m.model_set,
                "published_at": _iso(m.ts_event),
                "age_s": round((now - m.ts_event).total_seconds(), 3),
                "artifacts": {a.family: a.version for a in m.artifacts},
                "gate": m.gate.decision if m.gate else None,
                "train_window_end": _iso(m.train_window_end),
            },
            "manifests_seen": self.manifests_seen,
        }

    def snapshot(
        self,
        now: datetime,
        *,
        topic_names: dict[str, str],
        lag: dict[str, Any],
        trader: dict[str, Any],
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Return the whole picture as a JSON-ready dict."""
        topics = {
            short: {
                "topic": full,
                "messages": self.topics.get(short, 0),
                "rate_per_s": round(self.rate(short, now), 4),
                "last_record_at": _iso(self.last_ts.get(short)),
            }
            for short, full in topic_names.items()
        }
        return {
            **(meta or {}),
            "generated_at": _iso(now),
            "rate_window_s": self.rate_window_s,
            "topics": topics,
            "lag": lag,
            "dead_letters": {
                "count": sum(self.dead_letters.values()),
                "by_source_topic": dict(sorted(self.dead_letters.items())),
                "latest": [_dead(d) for d in reversed(self.latest_dead)],
            },
            "drift": {
                "count": self.drift_count,
                "latest": [_drift(d) for d in reversed(self.latest_drift)],
            },
            "pnl": self.pnl(),
            "orders": self.orders(),
            "models": self.models(now),
            "trader": trader,
            "decode_errors": dict(sorted(self.decode_errors.items())),
        }


def _fill(f: OrderFilled) -> dict[str, Any]:
    return {
        "at": _iso(f.ts_event),
        "symbol": f.symbol,
        "contract": f.contract,
        "client_order_id": f.client_order_id,
        "role": f.role,
        "side": f.side,
        "quantity": f.quantity,
        "cumulative_quantity": f.cumulative_quantity,
        "price": f.fill_price,
        "commission_usd": f.commission_usd,
        "venue": f.venue,
    }


def _dead(d: DeadLetter) -> dict[str, Any]:
    return {
        "at": _iso(d.ts_event),
        "source_topic": d.source_topic,
        "partition": d.partition,
        "offset": d.offset,
        "error_type": d.error_type,
        "reason": d.reason,
        "consumer": d.consumer,
    }


def _drift(d: DriftAlert) -> dict[str, Any]:
    return {
        "at": _iso(d.ts_event),
        "symbol": d.symbol,
        "strategy": d.strategy,
        "metric": d.metric,
        "detector": d.detector,
        "value": d.value,
        "detail": d.detail,
    }


def lag_summary(rows: list[LagRow], *, supported: bool, notes: list[str]) -> dict[str, Any]:
    """Return the lag section of a snapshot: rows, totals per group and notes."""
    totals: dict[str, int] = defaultdict(int)
    for r in rows:
        totals[r.group] += r.lag
    return {
        "supported": supported,
        "notes": notes,
        "partitions": [
            {
                "group": r.group,
                "topic": r.topic,
                "partition": r.partition,
                "committed": r.committed,
                "end": r.end,
                "lag": r.lag,
            }
            for r in rows
        ],
        "total_by_group": dict(sorted(totals.items())),
    }


# The trader's /healthz and /metrics ------------------------------------------------

_METRIC_NAMES = (
    "tradeloop_model_release_info",
    "tradeloop_model_age_seconds",
    "tradeloop_model_swaps_total",
    "tradeloop_model_rejections_total",
    "tradeloop_pnl_usd",
    "tradeloop_outbox_depth",
)


def parse_trader_metrics(text: str) -> dict[str, Any]:
    """Return model release, age, swaps, rejections, PnL and outbox depth from /metrics.

    Unknown or malformed lines are ignored; missing metrics are simply absent.
    """
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        return out
    for fam in families:
        for sample in fam.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "tradeloop_model_release_info" and value:
                out["release"] = labels.get("release")
            elif name == "tradeloop_model_age_seconds":
                out["model_age_s"] = value
            elif name == "tradeloop_model_swaps_total":
                out["swaps_total"] = int(value)
            elif name == "tradeloop_model_rejections_total":
                out.setdefault("rejections", {})[labels.get("reason", "")] = int(value)
            elif name == "tradeloop_pnl_usd":
                out.setdefault("pnl_usd", {})[labels.get("symbol", "")] = value
            elif name == "tradeloop_outbox_depth":
                out["outbox_depth"] = int(value)
    return out


def _find(obj: Any, *keys: str) -> Any:
    """Return the first value under any of `keys`, searching nested dicts breadth-first."""
    queue = [obj]
    while queue:
        cur = queue.pop(0)
        if not isinstance(cur, dict):
            continue
        for k in keys:
            if k in cur and cur[k] not in (None, ""):
                return cur[k]
        queue.extend(v for v in cur.values() if isinstance(v, dict))
    return None


def summarize_trader(
    url: str, health: dict[str, Any] | None, metrics: dict[str, Any] | None, error: str | None
) -> dict[str, Any]:
    """Return the trader section: serving release, age, last swap and last rejection.

    `health` is the /healthz JSON (or None), `metrics` what `parse_trader_metrics`
    found (or None). The trader's /healthz carries a `models` block (release,
    `age_s`, swaps, and `hot_swap` with `last_swap`/`last_rejection`); where it is
    present it is authoritative, /metrics fills what it lacks.
    """
    if health is None and metrics is None:
        return {"reachable": False, "url": url, "note": "trader not reachable", "error": error}
    h = health or {}
    m = metrics or {}
    models = h.get("models") if isinstance(h.get("models"), dict) else None
    if models is not None:
        hot = models.get("hot_swap") if isinstance(models.get("hot_swap"), dict) else {}
        release = models.get("release") or hot.get("release")
        age = models.get("age_s", hot.get("model_age_s"))
        last_swap = hot.get("last_swap") or models.get("last_swap")
        last_rejection = (
            hot.get("last_rejection")
            or models.get("last_rejection")
            or h.get("last_rejected_release")
        )
        swaps = models.get("swaps", hot.get("swaps"))
        rejections = h.get("rejections") or hot.get("rejections") or {}
    else:  # an older or foreign /healthz: search it, then fall back to /metrics
        release = _find(h, "release", "serving_release", "model_release") or m.get("release")
        age = _find(h, "model_age_s", "age_s", "model_age_seconds")
        age = age if isinstance(age, int | float) else m.get("model_age_s")
        last_swap = _find(h, "last_swap", "last_swap_at", "swapped_at")
        last_rejection = _find(h, "last_rejection", "last_rejected_release", "rejected")
        swaps = _find(h, "swaps", "swaps_total")
        rejections = _find(h, "rejections")
    return {
        "reachable": True,
        "url": url,
        "status": h.get("status"),
        "release": release if isinstance(release, str) else m.get("release"),
        "model_age_s": age if isinstance(age, int | float) else None,
        "last_swap": last_swap,
        "last_rejection": last_rejection,
        "swaps_total": m.get("swaps_total", swaps),
        "rejections": m.get("rejections", rejections) or {},
        "pnl_usd": m.get("pnl_usd"),
        "outbox_depth": m.get("outbox_depth"),
        "note": None if health is not None else "no /healthz JSON; figures from /metrics",
    }
