"""Real trades from order events: entries, excursions, exits, ready to become outcomes.

The engine registers a trade when it submits a bracket; the venue's order events
(folded into a `Ledger`, so realised PnL has one arithmetic) fill it and close it.
Excursions come from bars (`step`) by the rules of the paper fill model: on a bar
the stop or target was touched, the excursion stops at that level, and a gap
through the stop counts nothing. A trade whose exit filled is `closing` until the
engine settles it after the bar, so the exit bar's range is counted first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from infra.contracts import (
    Event,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    SignalSnapshot,
    TradeOutcome,
)
from trader.core.bar import MarketBar
from trader.venues.fills import Closed
from trader.venues.ledger import Ledger

__all__ = ["EXIT_REASONS", "Trade", "TradeBook", "counterfactual_outcome", "trade_outcome"]

#: Reasons a flatten order may carry that are exit reasons of a trade outcome as they are.
EXIT_REASONS = frozenset({"session_end", "timeout", "shutdown", "risk_flatten"})


class Trade:
    """One real trade from its bracket's submission to its exit."""

    __slots__ = (
        "bars_held",
        "commission_usd",
        "entry_id",
        "entry_price",
        "entry_ts_s",
        "exit_id",
        "exit_price",
        "exit_reason",
        "exit_ts_s",
        "filled",
        "mae_pts",
        "mfe_pts",
        "pnl_usd",
        "quantity",
        "side",
        "signal",
        "stop",
        "stop_dist",
        "strategy",
        "symbol",
        "target",
        "target_dist",
    )

    def __init__(
        self,
        signal: Any,
        entry_id: str,
        symbol: str,
        strategy: str,
        side: int,
        quantity: int,
        stop_dist: float,
        target_dist: float,
    ) -> None:
        self.signal = signal
        self.entry_id = entry_id
        self.symbol = symbol
        self.strategy = strategy
        self.side = side
        self.quantity = quantity
        self.stop_dist = stop_dist
        self.target_dist = target_dist
        self.filled = 0
        self.entry_price = self.stop = self.target = 0.0
        self.entry_ts_s = self.exit_ts_s = self.bars_held = 0
        self.mae_pts = self.mfe_pts = 0.0
        self.exit_id = self.exit_reason = ""
        self.exit_price = self.pnl_usd = self.commission_usd = 0.0

    @property
    def exiting(self) -> bool:
        """Say whether the exit filled (the trade waits to be settled)."""
        return bool(self.exit_reason)

    def step(self, bar: MarketBar) -> None:
        """Count one bar's excursions (the paper fill model's rules)."""
        side, entry = self.side, self.entry_price
        fresh = self.entry_ts_s == bar.ts_s
        o, h, lo = bar.open, bar.high, bar.low
        if side > 0:
            adverse, favourable = entry - lo, h - entry
            stop_hit, target_hit = lo <= self.stop, h >= self.target
            gap_stop = not fresh and o <= self.stop
            gap_target = not fresh and o >= self.target
        else:
            adverse, favourable = h - entry, entry - lo
            stop_hit, target_hit = h >= self.stop, lo <= self.target
            gap_stop = not fresh and o >= self.stop
            gap_target = not fresh and o <= self.target
        self.bars_held += 1
        if gap_stop:
            return
        if gap_target:
            favourable, adverse = (o - entry) * side, 0.0
        elif stop_hit:
            adverse = self.stop_dist
            if target_hit:
                favourable = 0.0
        elif target_hit:
            favourable = self.target_dist
        if adverse > self.mae_pts:  # no max(): this runs for every open trade on every bar
            self.mae_pts = adverse
        if favourable > self.mfe_pts:
            self.mfe_pts = favourable


class TradeBook:
    """The engine's real trades, driven by the venue's order events."""

    def __init__(self, point_values: Mapping[str, float], symbols: Iterable[str] = ()) -> None:
        self.ledger = Ledger(point_values, track_working=False)  # the venue has them
        self.trades: dict[str, Trade] = {}  # entry client order id -> trade
        self.parent: dict[str, str] = {}  # child or flatten client order id -> entry id
        self.flatten_reason: dict[str, str] = {}
        #: symbol -> filled trades, exits included (every symbol of `symbols` present)
        self.open: dict[str, list[Trade]] = {s: [] for s in symbols}
        self.closing: list[Trade] = []

    def submitted(self, trade: Trade) -> None:
        """Register a trade whose bracket is being submitted."""
        self.trades[trade.entry_id] = trade

    def forget(self, entry_id: str) -> Trade | None:
        """Drop a trade whose bracket the venue refused at once."""
        return self.trades.pop(entry_id, None)

    def apply(self, event: Event) -> Trade | None:
        """Fold an order event; return a trade whose entry ended unfilled (to release its risk)."""
        pnl = self.ledger.apply(event)
        kind = type(event)
        if kind is OrderFilled:
            self._filled(event, pnl)  # type: ignore[arg-type]
        elif isinstance(event, OrderSubmitted):
            if event.parent_id:
                self.parent[event.client_order_id] = event.parent_id
                trade = self.trades.get(event.parent_id)
                if trade is not None:
                    if event.role == "stop" and event.stop_price is not None:
                        trade.stop = event.stop_price
                    elif event.role == "target" and event.limit_price is not None:
                        trade.target = event.limit_price
            if event.role == "flatten":
                self.flatten_reason[event.client_order_id] = event.reason
        elif kind is OrderRejected or kind is OrderCancelled or kind is OrderExpired:
            trade = self.trades.get(event.client_order_id)  # type: ignore[attr-defined]
            if trade is not None and trade.filled == 0:
                return self.trades.pop(event.client_order_id)  # type: ignore[attr-defined]
        return None

    def _filled(self, e: OrderFilled, pnl: float | None) -> None:
        cid = e.client_order_id
        if e.role == "entry":
            trade = self.trades.get(cid)
            if trade is None:
                return
            done = trade.filled
            trade.entry_price = (
                e.fill_price
                if done == 0
                else (trade.entry_price * done + e.fill_price * e.quantity) / (done + e.quantity)
            )
            trade.filled += e.quantity
            trade.commission_usd += e.commission_usd
            if e.leaves_quantity == 0:
                trade.quantity = trade.filled
                trade.entry_ts_s = int(e.ts_event.timestamp())
                if not trade.stop:
                    trade.stop = trade.entry_price - trade.side * trade.stop_dist
                    trade.target = trade.entry_price + trade.side * trade.target_dist
                self.open.setdefault(trade.symbol, []).append(trade)
            return
        entry_id = self.parent.get(cid)
        trade = self.trades.get(entry_id) if entry_id is not None else None
        if trade is None:
            return
        trade.commission_usd += e.commission_usd
        if pnl is not None:
            trade.pnl_usd += pnl
        if e.leaves_quantity == 0:
            trade.exit_id, trade.exit_price = cid, e.fill_price
            trade.exit_ts_s = int(e.ts_event.timestamp())
            if e.role == "flatten":
                reason = self.flatten_reason.pop(cid, "")
                trade.exit_reason = reason if reason in EXIT_REASONS else "risk_flatten"
            else:
                trade.exit_reason = e.role
            self.closing.append(trade)

    def step(self, bar: MarketBar, skip_held: bool) -> None:
        """Count a bar's excursions for the symbol's filled trades (`skip_held`: fresh ones only)."""
        for trade in self.open.get(bar.symbol, ()):
            if skip_held and trade.entry_ts_s != bar.ts_s:
                continue
            if trade.exit_reason and trade.exit_ts_s <= bar.ts_s - bar.interval_s:
                continue  # the exit filled before this bar opened
            trade.step(bar)

    def settle(self) -> list[Trade]:
        """Return the trades whose exit filled, in exit order, and forget them."""
        done, self.closing = self.closing, []
        for trade in done:
            held = self.open.get(trade.symbol)
            if held is not None and trade in held:
                held.remove(trade)
            self.trades.pop(trade.entry_id, None)
            for cid in [c for c, p in self.parent.items() if p == trade.entry_id]:
                del self.parent[cid]
        return done


def _utc(ts_s: int) -> datetime:
    return datetime.fromtimestamp(ts_s, UTC)


def trade_outcome(t: Trade, point_value_usd: float, source: str, run_id: str) -> TradeOutcome:
    """Return the outcome of a settled real trade, naming its entry and exit orders."""
    signal: SignalSnapshot = t.signal
    risk_usd = t.stop_dist * point_value_usd * t.quantity
    pnl = t.pnl_usd
    return TradeOutcome.checked(
        ts_event=_utc(t.exit_ts_s),
        signal_id=signal.event_id,
        symbol=t.symbol,
        strategy=t.strategy,
        side=signal.side,
        entry_ts=_utc(t.entry_ts_s),
        entry_price=t.entry_price,
        exit_ts=_utc(t.exit_ts_s),
        exit_price=t.exit_price,
        quantity=t.quantity,
        pnl_usd=pnl,
        r_multiple=pnl / risk_usd if risk_usd > 0 else 0.0,
        mae_r=t.mae_pts / t.stop_dist if t.stop_dist > 0 else 0.0,
        mfe_r=t.mfe_pts / t.stop_dist if t.stop_dist > 0 else 0.0,
        commission_usd=t.commission_usd,
        exit_reason=t.exit_reason,  # type: ignore[arg-type]
        counterfactual=False,
        model_versions=signal.model_versions,
        source=source,
        run_id=run_id,
        entry_order_id=t.entry_id,
        exit_order_id=t.exit_id,
    )


def counterfactual_outcome(closed: Closed, source: str, run_id: str) -> TradeOutcome:
    """Return the outcome of a counterfactual position closed by the paper fill model."""
    p = closed.position
    signal: SignalSnapshot = p.signal
    return TradeOutcome.checked(
        ts_event=_utc(closed.exit_ts_s),
        signal_id=signal.event_id,
        symbol=p.symbol,
        strategy=p.strategy,
        side=signal.side,
        entry_ts=_utc(p.entry_ts_s),
        entry_price=p.entry_price,
        exit_ts=_utc(closed.exit_ts_s),
        exit_price=closed.exit_price,
        quantity=p.quantity,
        pnl_usd=closed.pnl_usd,
        r_multiple=closed.r_multiple,
        mae_r=closed.mae_r,
        mfe_r=closed.mfe_r,
        commission_usd=closed.commission_usd,
        exit_reason=closed.exit_reason,  # type: ignore[arg-type]
        counterfactual=True,
        model_versions=signal.model_versions,
        source=source,
        run_id=run_id,
    )
