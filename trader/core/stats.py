"""Per symbol and strategy statistics of signals and trades (for /verify/today and backtests).

The trade figures come from `features.trade_stats`; this module adds the signal
counters, the (symbol, strategy) grouping and the summary layout the API and the
backtest table show.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from features.trade_stats import TradeAccumulator, TradeStatsError

__all__ = ["ALL", "GroupStats", "TradeStats"]

ALL = "ALL"
log = logging.getLogger(__name__)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class GroupStats:
    """Counters of one (symbol, strategy) group: signals, real trades and counterfactuals."""

    signals: int = 0
    taken: int = 0
    real: TradeAccumulator = field(default_factory=TradeAccumulator)
    counterfactual: TradeAccumulator = field(default_factory=TradeAccumulator)

    def add_trade(self, pnl_usd: float, r: float) -> None:
        """Count a closed real trade."""
        self.real.add(pnl_usd, r)

    @property
    def trades(self) -> int:
        """Return how many real trades closed."""
        return self.real.trades

    def summary(self) -> dict[str, Any]:
        """Return signals, trades, win rate, avg R, PnL, per-trade Sharpe and max drawdown."""
        s = self.real.summary()
        cf = self.counterfactual
        return {
            "signals": self.signals,
            "taken": self.taken,
            "trades": s.trades,
            "win_rate": _round(s.win_rate, 4),
            "avg_r": _round(s.avg_r, 4),
            "pnl_usd": round(s.pnl_usd, 2),
            "sharpe": _round(s.sharpe_usd, 4),
            "max_drawdown_usd": round(s.max_drawdown_usd, 2),
            "counterfactual_trades": cf.trades,
            "counterfactual_avg_r": _round(cf.avg_r, 4),
        }


class TradeStats:
    """Statistics keyed by (symbol, strategy), plus per-symbol totals."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str], GroupStats] = {}

    def _group(self, symbol: str, strategy: str) -> GroupStats:
        g = self.groups.get((symbol, strategy))
        if g is None:
            g = self.groups[(symbol, strategy)] = GroupStats()
        return g

    def signal(self, symbol: str, strategy: str, taken: bool) -> None:
        """Count a candidate signal."""
        for g in (self._group(symbol, strategy), self._group(symbol, ALL)):
            g.signals += 1
            g.taken += taken

    def outcome(
        self, symbol: str, strategy: str, pnl_usd: float, r: float, counterfactual: bool
    ) -> None:
        """Count a closed trade (in close order, so drawdowns follow the equity curve).

        A trade with a non-finite PnL or R is logged and left out, never raised:
        it would poison every later figure of its groups.
        """
        groups = (self._group(symbol, strategy), self._group(symbol, ALL))
        try:
            for g in groups:
                (g.counterfactual if counterfactual else g.real).add(pnl_usd, r)
        except TradeStatsError as exc:
            log.warning("trade of %s %s left out of the statistics: %s", symbol, strategy, exc)

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Return {symbol: {strategy | "ALL": stats}}."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (symbol, strategy), g in sorted(
            self.groups.items(), key=lambda kv: (kv[0][0], kv[0][1] == ALL, kv[0][1])
        ):
            out.setdefault(symbol, {})[strategy] = g.summary()
        return out
