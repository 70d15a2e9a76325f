"""Per symbol and strategy statistics of signals and trades (for /verify/today and backtests)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["ALL", "GroupStats", "TradeStats"]

ALL = "ALL"


@dataclass
class GroupStats:
    """Counters of one (symbol, strategy) group; real trades unless said otherwise."""

    signals: int = 0
    taken: int = 0
    trades: int = 0
    wins: int = 0
    sum_r: float = 0.0
    pnl_usd: float = 0.0
    sum_pnl_sq: float = 0.0
    peak_usd: float = 0.0
    max_drawdown_usd: float = 0.0
    cf_trades: int = 0
    cf_sum_r: float = 0.0

    def add_trade(self, pnl_usd: float, r: float) -> None:
        """Count a closed real trade."""
        self.trades += 1
        self.wins += pnl_usd > 0
        self.sum_r += r
        self.pnl_usd += pnl_usd
        self.sum_pnl_sq += pnl_usd * pnl_usd
        self.peak_usd = max(self.peak_usd, self.pnl_usd)
        self.max_drawdown_usd = max(self.max_drawdown_usd, self.peak_usd - self.pnl_usd)

    def summary(self) -> dict[str, Any]:
        """Return signals, trades, win rate, avg R, PnL, per-trade Sharpe and max drawdown."""
        n = self.trades
        mean = self.pnl_usd / n if n else 0.0
        var = self.sum_pnl_sq / n - mean * mean if n else 0.0
        sd = math.sqrt(var * n / (n - 1)) if n > 1 and var > 0 else 0.0
        return {
            "signals": self.signals,
            "taken": self.taken,
            "trades": n,
            "win_rate": round(self.wins / n, 4) if n else None,
            "avg_r": round(self.sum_r / n, 4) if n else None,
            "pnl_usd": round(self.pnl_usd, 2),
            "sharpe": round(mean / sd, 4) if sd > 0 else None,
            "max_drawdown_usd": round(self.max_drawdown_usd, 2),
            "counterfactual_trades": self.cf_trades,
            "counterfactual_avg_r": round(self.cf_sum_r / self.cf_trades, 4)
            if self.cf_trades
            else None,
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
        """Count a closed trade (in close order, so drawdowns follow the equity curve)."""
        for g in (self._group(symbol, strategy), self._group(symbol, ALL)):
            if counterfactual:
                g.cf_trades += 1
                g.cf_sum_r += r
            else:
                g.add_trade(pnl_usd, r)

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Return {symbol: {strategy | "ALL": stats}}."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (symbol, strategy), g in sorted(
            self.groups.items(), key=lambda kv: (kv[0][0], kv[0][1] == ALL, kv[0][1])
        ):
            out.setdefault(symbol, {})[strategy] = g.summary()
        return out
