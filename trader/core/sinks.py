"""The engine's observers as sinks: each takes `(topic, event)` for every fact the engine publishes.

The engine publishes each event once to its list of sinks (the Kafka outbox, a lake
writer, the stream-feature cache, the trade statistics, the canary's outcome
tracking); none of them is fed by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from infra.contracts import Event, SignalSnapshot, TradeOutcome
from trader.core.stats import TradeStats

if TYPE_CHECKING:
    from trader.delivery.canary import ModelRouter

__all__ = ["CanaryOutcomes", "Sink", "StatsSink"]

Sink = Callable[[str, Event], None]


class StatsSink:
    """Signal and trade statistics of the whole run (`total`) and of the trading day (`today`)."""

    def __init__(self) -> None:
        self.total = TradeStats()
        self.today = TradeStats()

    def new_day(self) -> None:
        """Start the statistics of a new trading day."""
        self.today = TradeStats()

    def __call__(self, topic: str, event: Event) -> None:
        if isinstance(event, SignalSnapshot):
            taken = event.decision.taken
            self.total.signal(event.symbol, event.strategy, taken)
            self.today.signal(event.symbol, event.strategy, taken)
        elif isinstance(event, TradeOutcome):
            for stats in (self.total, self.today):
                stats.outcome(
                    event.symbol,
                    event.strategy,
                    event.pnl_usd,
                    event.r_multiple,
                    event.counterfactual,
                )


class CanaryOutcomes:
    """Resolve the canary router's decisions with the R-multiple of their outcomes."""

    def __init__(self, router: ModelRouter) -> None:
        self.router = router

    def __call__(self, topic: str, event: Event) -> None:
        if isinstance(event, TradeOutcome):
            self.router.record_outcome(event.signal_id, event.r_multiple)
