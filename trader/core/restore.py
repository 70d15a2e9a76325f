"""Take over the open trades of a previous process from its order journal.

A restarted trader folds the journal's order events into the engine's trade book
the way the events first arrived: entries register trades, fills open and close
them. Trades that closed before the restart had their outcomes published then and
are dropped here; trades still open are the engine's again (session-end and
timeout flattening, excursions, the outcome when the stop or target fills), and
count as open positions for risk. What the journal cannot give back: the signal
snapshot (an adopted trade's outcome names the signal id its entry order carried,
with no model versions), the excursions before the restart, and the bars held
before it (the timeout counts from the restart).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from infra.contracts import OrderSubmitted, Side, VenueEvent
from trader.core.risk import RiskManager
from trader.core.trades import Trade, TradeBook

__all__ = ["RestoredSignal", "adopt_trades"]


@dataclass(frozen=True, slots=True)
class RestoredSignal:
    """What an adopted trade's outcome needs of the signal that opened it."""

    event_id: str
    side: Side
    model_versions: dict[str, str] = field(default_factory=dict)


def adopt_trades(book: TradeBook, risk: RiskManager, events: Iterable[VenueEvent]) -> list[Trade]:
    """Fold a journal into the trade book and risk; return the trades still open."""
    for e in events:
        if isinstance(e, OrderSubmitted) and e.role == "entry":
            sign = 1 if e.side == "buy" else -1
            signal = RestoredSignal(
                e.signal_id or e.client_order_id, "long" if sign > 0 else "short"
            )
            book.submitted(
                Trade(signal, e.client_order_id, e.symbol, e.strategy, sign, e.quantity, 0.0, 0.0)
            )
            risk.opened(e.symbol)
        dead = book.apply(e)
        if dead is not None:
            risk.cancelled(dead.symbol)
    for trade in book.settle():  # closed before the restart: the outcome is out already
        risk.cancelled(trade.symbol)
    still = [t for held in book.open.values() for t in held]
    for t in still:
        t.stop_dist = abs(t.entry_price - t.stop) if t.stop else 0.0
        t.target_dist = abs(t.target - t.entry_price) if t.target else 0.0
    return still
