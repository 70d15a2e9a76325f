"""Risk limits for real (not counterfactual) trades.

- `MAX_CONTRACTS_PER_SYMBOL` caps the size; the worst-case loss of a new trade
  (stop distance x contracts + commissions) must also fit in what is left of
  `MAX_DAILY_LOSS_USD` today, else the size is cut (and the trade skipped at 0).
- `MAX_OPEN_POSITIONS` across symbols, and one position (open or pending) per symbol.
- `MAX_DAILY_LOSS_USD`: once the day's realised loss reaches it, new entries halt
  until the next trading day (trading days start 18:00 ET).
- `LOSS_STREAK_COOLDOWN` losing trades in a row start a cooldown of
  `COOLDOWN_BARS` bars (counted in market time) without new entries.
- `FLATTEN_AT_SESSION_END`: entries only in regular hours up to 5 minutes before
  the 16:00 ET close, where the paper broker flattens (see `trader.venues.paper`).
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.settings import Settings

__all__ = ["RiskLimits", "RiskManager"]


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The limits, read from settings."""

    max_contracts_per_symbol: int = 4
    max_open_positions: int = 2
    max_daily_loss_usd: float = 2000.0
    loss_streak_cooldown: int = 3
    cooldown_bars: int = 15
    flatten_at_session_end: bool = True
    commission_per_contract_usd: float = 2.25

    @classmethod
    def from_settings(cls, s: Settings) -> RiskLimits:
        """Return the limits configured in settings."""
        return cls(
            max_contracts_per_symbol=s.max_contracts_per_symbol,
            max_open_positions=s.max_open_positions,
            max_daily_loss_usd=s.max_daily_loss_usd,
            loss_streak_cooldown=s.loss_streak_cooldown,
            cooldown_bars=s.cooldown_bars,
            flatten_at_session_end=s.flatten_at_session_end,
            commission_per_contract_usd=s.commission_per_contract_usd,
        )


class RiskManager:
    """Check and size new entries; learn from closed real trades."""

    def __init__(self, limits: RiskLimits) -> None:
        self.limits = limits
        self.day = -1
        self.daily_pnl_usd = 0.0
        self.halted = False
        self.loss_streak = 0
        self.cooldown_until_s = 0
        self.positions: dict[str, int] = {}  # symbol -> open or pending real positions
        self.rejections: dict[str, int] = {}

    def new_bar(self, trading_day: int) -> None:
        """Roll the daily counters when a new trading day starts."""
        if trading_day != self.day:
            self.day = trading_day
            self.daily_pnl_usd = 0.0
            self.halted = False

    @property
    def open_positions(self) -> int:
        """Return the number of open or pending real positions."""
        return sum(self.positions.values())

    def check(
        self, symbol: str, contracts: int, stop_usd_per_contract: float, now_s: int
    ) -> tuple[int, str]:
        """Return (allowed contracts, reason); reason is "taken" when allowed > 0."""
        lim = self.limits
        if self.halted:
            return 0, self._reject("daily_loss_halt")
        if now_s < self.cooldown_until_s:
            return 0, self._reject("cooldown")
        if self.positions.get(symbol, 0) > 0:
            return 0, self._reject("position_open")
        if self.open_positions >= lim.max_open_positions:
            return 0, self._reject("max_open_positions")
        if contracts <= 0:
            return 0, self._reject("size_zero")
        allowed = min(contracts, lim.max_contracts_per_symbol)
        budget = lim.max_daily_loss_usd + min(0.0, self.daily_pnl_usd)
        worst = stop_usd_per_contract + 2.0 * lim.commission_per_contract_usd
        if worst > 0:
            allowed = min(allowed, int(budget // worst))
        if allowed <= 0:
            return 0, self._reject("risk_budget")
        return allowed, "taken"

    def _reject(self, reason: str) -> str:
        self.rejections[reason] = self.rejections.get(reason, 0) + 1
        return reason

    def opened(self, symbol: str) -> None:
        """Record a new real position (pending until filled)."""
        self.positions[symbol] = self.positions.get(symbol, 0) + 1

    def closed(self, symbol: str, pnl_usd: float, exit_ts_s: int, interval_s: int) -> None:
        """Record a closed real trade: daily PnL, halt, loss streak and cooldown."""
        self.positions[symbol] = max(0, self.positions.get(symbol, 0) - 1)
        self.daily_pnl_usd += pnl_usd
        if self.daily_pnl_usd <= -self.limits.max_daily_loss_usd:
            self.halted = True
        if pnl_usd < 0:
            self.loss_streak += 1
            if self.loss_streak >= self.limits.loss_streak_cooldown:
                self.cooldown_until_s = exit_ts_s + self.limits.cooldown_bars * interval_s
                self.loss_streak = 0
        else:
            self.loss_streak = 0

    def cancelled(self, symbol: str) -> None:
        """Forget a real position that never filled."""
        self.positions[symbol] = max(0, self.positions.get(symbol, 0) - 1)

    def state(self) -> dict[str, object]:
        """Return the risk state for /healthz."""
        return {
            "daily_pnl_usd": round(self.daily_pnl_usd, 2),
            "halted": self.halted,
            "loss_streak": self.loss_streak,
            "cooldown_until_s": self.cooldown_until_s,
            "open_positions": self.open_positions,
            "rejections": dict(self.rejections),
        }
