"""The console's event feed: a sink that keeps the recent facts and wakes the live streams.

The engine publishes every fact once to its sinks; this one keeps what the console
shows and no more (bounded deques): the latest decisions, order events and fills,
the realised equity curve, reconciliations and drift alerts. Each fact bumps
`version` and wakes every subscribed stream on its own event loop (thread-safe).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infra.contracts import (
    DriftAlert,
    Event,
    OrderEvent,
    OrderFilled,
    PositionReconciled,
    SignalSnapshot,
    TradeOutcome,
)

if TYPE_CHECKING:
    from trader.core.engine import Engine

__all__ = ["ConsoleFeed", "EquityPoint"]

MAX_DECISIONS = 24
MAX_ORDER_EVENTS = 30
MAX_FILLS = 12
MAX_EQUITY_POINTS = 5000
MAX_ALERTS = 10


@dataclass(frozen=True, slots=True)
class EquityPoint:
    """Realised equity after a closed trade: when, on which trading day, how much."""

    ts_s: float
    trading_day: int
    equity_usd: float


@dataclass
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class ConsoleFeed:
    """Recent facts for the operator console; call it with `(topic, event)` like any sink."""

    def __init__(self) -> None:
        self.version = 0
        self.decisions: deque[dict[str, Any]] = deque(maxlen=MAX_DECISIONS)
        self.order_events: deque[dict[str, Any]] = deque(maxlen=MAX_ORDER_EVENTS)
        self.fills: deque[dict[str, Any]] = deque(maxlen=MAX_FILLS)
        self.equity: deque[EquityPoint] = deque(maxlen=MAX_EQUITY_POINTS)
        self.reconciliations: deque[dict[str, Any]] = deque(maxlen=MAX_ALERTS)
        self.drift_alerts: deque[dict[str, Any]] = deque(maxlen=MAX_ALERTS)
        self.realised_usd = 0.0
        self.trades = 0
        self.closed = False
        self._engine: Engine | None = None
        self._subscribers: list[_Subscriber] = []
        self._lock = threading.Lock()

    def attach(self, engine: Engine) -> ConsoleFeed:
        """Receive the engine's facts from now on (once) and date trades by its trading day."""
        self._engine = engine
        if self not in engine.sinks:
            engine.sinks.append(self)
        return self

    # the sink -------------------------------------------------------------

    def __call__(self, topic: str, event: Event) -> None:
        if isinstance(event, SignalSnapshot):
            self.decisions.appendleft(_decision(event))
        elif isinstance(event, TradeOutcome):
            if event.counterfactual:
                return  # counterfactuals feed the statistics, not the account
            self.realised_usd += event.pnl_usd
            self.trades += 1
            day = self._engine.risk.day if self._engine is not None else 0
            self.equity.append(
                EquityPoint(event.exit_ts.timestamp(), day, round(self.realised_usd, 2))
            )
        elif isinstance(event, OrderEvent):
            row = _order_event(event)
            self.order_events.appendleft(row)
            if isinstance(event, OrderFilled):
                self.fills.appendleft(row)
        elif isinstance(event, PositionReconciled):
            self.reconciliations.appendleft(
                {
                    "at": event.ts_event.isoformat(),
                    "symbol": event.symbol,
                    "status": event.status,
                    "quantity": event.quantity,
                    "expected_quantity": event.expected_quantity,
                    "detail": event.detail,
                }
            )
        elif isinstance(event, DriftAlert):
            self.drift_alerts.appendleft(
                {
                    "at": event.ts_event.isoformat(),
                    "symbol": event.symbol,
                    "strategy": event.strategy,
                    "metric": event.metric,
                    "detector": event.detector,
                    "value": event.value,
                    "detail": event.detail,
                }
            )
        else:
            return  # bars and feature updates are not shown
        self.changed()

    # the streams ----------------------------------------------------------

    def changed(self) -> None:
        """Count a change and wake every stream (from any thread)."""
        with self._lock:
            self.version += 1
            subscribers = list(self._subscribers)
        for sub in subscribers:
            if sub.loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is sub.loop:
                sub.wake.set()
            else:
                sub.loop.call_soon_threadsafe(sub.wake.set)

    def close(self) -> None:
        """End every stream (the trader is stopping)."""
        self.closed = True
        self.changed()

    def subscribe(self) -> asyncio.Event:
        """Return an event set on every change (call from the stream's loop)."""
        sub = _Subscriber(asyncio.get_running_loop())
        with self._lock:
            self._subscribers.append(sub)
        return sub.wake

    def unsubscribe(self, wake: asyncio.Event) -> None:
        """Stop waking `wake`."""
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s.wake is not wake]

    @property
    def subscribers(self) -> int:
        """Return how many streams are open."""
        return len(self._subscribers)


def _decision(s: SignalSnapshot) -> dict[str, Any]:
    d = s.decision
    return {
        "at": s.ts_event.isoformat(),
        "symbol": s.symbol,
        "strategy": s.strategy,
        "side": s.side,
        "entry": s.entry,
        "stop": s.stop,
        "target": s.target,
        "taken": d.taken,
        "chosen": d.chosen_strategy,
        "path": d.path,
        "variant": d.variant,
        "probabilities": {k: round(v, 3) for k, v in d.probabilities.items()},
        "predicted_r": None if d.predicted_r is None else round(d.predicted_r, 3),
        "size_multiplier": round(d.size_multiplier, 3),
        "contracts": d.contracts,
        "reason": d.reason,
    }


def _order_event(e: OrderEvent) -> dict[str, Any]:
    row: dict[str, Any] = {
        "at": e.ts_event.isoformat(),
        "type": type(e).__name__.removeprefix("Order").lower(),
        "symbol": e.symbol,
        "client_order_id": e.client_order_id,
    }
    for name in ("role", "side", "quantity", "fill_price", "stop_price", "limit_price", "reason"):
        value = getattr(e, name, None)
        if value not in (None, ""):
            row[name] = value
    return row
