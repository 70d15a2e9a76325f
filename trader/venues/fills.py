"""The paper fill model: next-bar-open fills, bracket exits from the bar range.

The `paper` venue (`trader.venues.paper`) routes real orders through it; the engine
runs counterfactual positions through a second instance.

- An order placed on a bar's close fills at the next bar's open plus
  `SLIPPAGE_TICKS` against the trader (long pays up, short sells lower). Stop and
  target keep the distances of the signal, re-anchored at the fill price.
- Each bar after (and including) the fill bar: a gap through the stop exits at the
  open minus slippage; a gap through the target exits at the open; else a touched
  stop exits at the stop minus slippage and a touched target at the target. When
  one bar touches both, the stop wins (the pessimistic reading).
- Session end (`flatten=True`): at the close of the bar that ends the regular session
  (the exchange calendar's close, early closes included; or at the open of the first
  bar after the close if that bar is missing) positions exit at market.
- `max_hold_bars` bars after the fill a position times out at the bar's close.
- Commission is charged per contract on entry and on exit.
- Outcomes: pnl_usd (after commission), r_multiple = pnl_usd / (planned stop
  distance x point value x quantity), mae_r / mfe_r = the largest adverse /
  favourable excursion from the fill in units of the stop distance (both >= 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trader.core.bar import MarketBar
from trader.core.instruments import Instrument

__all__ = ["Closed", "PaperBroker", "Position"]


class Position:
    """An order waiting for its fill, then an open position."""

    __slots__ = (
        "bars_held",
        "counterfactual",
        "entry_price",
        "entry_ts_s",
        "mae_pts",
        "mfe_pts",
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
        symbol: str,
        strategy: str,
        side: int,
        quantity: int,
        stop_dist: float,
        target_dist: float,
        counterfactual: bool,
    ) -> None:
        self.signal = signal
        self.symbol = symbol
        self.strategy = strategy
        self.side = side
        self.quantity = quantity
        self.stop_dist = stop_dist
        self.target_dist = target_dist
        self.counterfactual = counterfactual
        self.entry_price = 0.0
        self.entry_ts_s = 0
        self.stop = self.target = 0.0
        self.mae_pts = self.mfe_pts = 0.0
        self.bars_held = 0


@dataclass(frozen=True, slots=True)
class Closed:
    """A finished trade, ready to become a `TradeOutcome`."""

    position: Position
    exit_ts_s: int
    exit_price: float
    exit_reason: str
    pnl_usd: float
    r_multiple: float
    mae_r: float
    mfe_r: float
    commission_usd: float


class PaperBroker:
    """Simulated fills and exits for real and counterfactual positions."""

    def __init__(
        self,
        instruments: dict[str, Instrument],
        *,
        slippage_ticks: float = 1.0,
        commission_per_contract_usd: float = 2.25,
        flatten: bool = True,
        max_hold_bars: int = 240,
        record_fills: bool = False,
    ) -> None:
        self.instruments = instruments
        self.slippage_ticks = slippage_ticks
        self.commission = commission_per_contract_usd
        self.flatten = flatten
        self.max_hold_bars = max_hold_bars
        self.pending: dict[str, list[Position]] = {s: [] for s in instruments}
        self.open: dict[str, list[Position]] = {s: [] for s in instruments}
        self.record_fills = record_fills
        #: with `record_fills`: the entries filled since the caller last cleared it
        self.filled: list[Position] = []

    def place(self, position: Position) -> None:
        """Queue an entry for the next bar's open."""
        self.pending.setdefault(position.symbol, []).append(position)

    def on_bar(self, bar: MarketBar, minutes_to_close: int, in_rth: bool) -> list[Closed]:
        """Fill pending entries at this bar's open, then check exits; return closed trades."""
        symbol = bar.symbol
        pending = self.pending.get(symbol)
        held = self.open.get(symbol)
        if not pending and not held:
            return []
        if held is None:
            held = self.open[symbol] = []
        inst = self.instruments[symbol]
        slip = self.slippage_ticks * inst.tick_size
        closed: list[Closed] = []
        if self.flatten and held and not in_rth:
            # the session-end bar is missing: leave at this bar's open
            for p in held:
                closed.append(
                    self._close(p, bar.ts_s, bar.open - p.side * slip, "session_end", inst)
                )
            held.clear()
        if pending:
            for p in pending:
                price = bar.open + p.side * slip
                p.entry_price = price
                p.entry_ts_s = bar.ts_s
                p.stop = price - p.side * p.stop_dist
                p.target = price + p.side * p.target_dist
                held.append(p)
            if self.record_fills:
                self.filled.extend(pending)
            pending.clear()
        if not held:
            return closed
        session_end = self.flatten and in_rth and minutes_to_close <= 0
        max_hold = self.max_hold_bars
        keep: list[Position] = []
        o, h, lo, c = bar.open, bar.high, bar.low, bar.close
        for p in held:
            side = p.side
            # the common bar: open and range inside both brackets, so no exit, only the
            # excursions and the clock (a bar with its open outside its range goes below)
            stop, target = p.stop, p.target
            if (
                (stop < lo and h < target and stop < o < target)
                if side > 0
                else (h < stop and target < lo and target < o < stop)
            ):
                p.bars_held += 1
                entry = p.entry_price
                adverse, favourable = (
                    (entry - lo, h - entry) if side > 0 else (h - entry, entry - lo)
                )
                if adverse > p.mae_pts:  # max(p.mae_pts, adverse), as below
                    p.mae_pts = adverse
                if favourable > p.mfe_pts:
                    p.mfe_pts = favourable
                if not session_end and p.bars_held < max_hold:
                    keep.append(p)
                    continue
                reason = "session_end" if session_end else "timeout"
                closed.append(self._close(p, bar.ts_s, c - side * slip, reason, inst))
                continue
            fresh = p.entry_ts_s == bar.ts_s
            if side > 0:
                adverse, favourable = p.entry_price - lo, h - p.entry_price
                stop_hit, target_hit = lo <= p.stop, h >= p.target
                gap_stop = not fresh and o <= p.stop
                gap_target = not fresh and o >= p.target
            else:
                adverse, favourable = h - p.entry_price, p.entry_price - lo
                stop_hit, target_hit = h >= p.stop, lo <= p.target
                gap_stop = not fresh and o >= p.stop
                gap_target = not fresh and o <= p.target
            p.bars_held += 1
            if gap_stop:
                closed.append(self._close(p, bar.ts_s, o - side * slip, "stop", inst))
            elif gap_target:
                p.mfe_pts = max(p.mfe_pts, (o - p.entry_price) * side)
                closed.append(self._close(p, bar.ts_s, o, "target", inst))
            elif stop_hit:
                p.mae_pts = max(p.mae_pts, p.stop_dist)
                if not target_hit:
                    p.mfe_pts = max(p.mfe_pts, favourable)
                closed.append(self._close(p, bar.ts_s, p.stop - side * slip, "stop", inst))
            elif target_hit:
                p.mae_pts = max(p.mae_pts, adverse)
                p.mfe_pts = max(p.mfe_pts, p.target_dist)
                closed.append(self._close(p, bar.ts_s, p.target, "target", inst))
            else:
                p.mae_pts = max(p.mae_pts, adverse)
                p.mfe_pts = max(p.mfe_pts, favourable)
                if session_end:
                    closed.append(self._close(p, bar.ts_s, c - side * slip, "session_end", inst))
                elif p.bars_held >= self.max_hold_bars:
                    closed.append(self._close(p, bar.ts_s, c - side * slip, "timeout", inst))
                else:
                    keep.append(p)
        held[:] = keep
        return closed

    def close_all(
        self, bars: dict[str, MarketBar], reason: str = "shutdown"
    ) -> tuple[list[Closed], list[Position]]:
        """Exit every open position at its symbol's last close; return (closed, unfilled)."""
        closed: list[Closed] = []
        for symbol, held in self.open.items():
            bar = bars.get(symbol)
            if bar is None:
                continue
            inst = self.instruments[symbol]
            slip = self.slippage_ticks * inst.tick_size
            for p in held:
                closed.append(self._close(p, bar.ts_s, bar.close - p.side * slip, reason, inst))
            held.clear()
        unfilled = [p for plist in self.pending.values() for p in plist]
        for plist in self.pending.values():
            plist.clear()
        return closed, unfilled

    def _close(self, p: Position, ts_s: int, price: float, reason: str, inst: Instrument) -> Closed:
        commission = 2.0 * self.commission * p.quantity
        points = (price - p.entry_price) * p.side
        pnl = points * inst.point_value_usd * p.quantity - commission
        risk_usd = p.stop_dist * inst.point_value_usd * p.quantity
        return Closed(
            position=p,
            exit_ts_s=ts_s,
            exit_price=price,
            exit_reason=reason,
            pnl_usd=pnl,
            r_multiple=pnl / risk_usd if risk_usd > 0 else 0.0,
            mae_r=p.mae_pts / p.stop_dist if p.stop_dist > 0 else 0.0,
            mfe_r=p.mfe_pts / p.stop_dist if p.stop_dist > 0 else 0.0,
            commission_usd=commission,
        )

    def positions(self, counterfactual: bool | None = None) -> list[Position]:
        """Return open and pending positions (optionally only real or counterfactual)."""
        out = [p for plist in (*self.open.values(), *self.pending.values()) for p in plist]
        if counterfactual is None:
            return out
        return [p for p in out if p.counterfactual == counterfactual]
