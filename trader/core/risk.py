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
  the exchange calendar's close (early closes included, none on holidays; see
  `features.calendar`), where the paper venue flattens.
- Holds: named reasons that refuse every entry until released (the kill switch,
  an unexplained reconciliation difference, a prop-firm breach); a hold may expire
  when a given trading day starts.
- Prop-firm rules (TopstepX, see `PropRules`): the trailing Maximum Loss Limit
  (`PROP_MAX_LOSS_LIMIT_USD`) and the Daily Loss Limit (`PROP_DAILY_LOSS_LIMIT_USD`)
  on an account that starts at `PROP_START_BALANCE_USD`; 0 turns a rule off. A
  breach holds entries and is reported once, so the trader can trigger the kill switch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from infra.settings import Settings

__all__ = [
    "DAILY_LOSS_LIMIT",
    "MAX_LOSS_LIMIT",
    "PropAccount",
    "PropLimits",
    "PropRules",
    "RiskLimits",
    "RiskManager",
    "open_pnl_usd",
]

#: Hold and breach names of the prop-firm rules.
DAILY_LOSS_LIMIT = "daily_loss_limit"
MAX_LOSS_LIMIT = "max_loss_limit"


@dataclass(frozen=True, slots=True)
class PropLimits:
    """The prop-firm account: starting balance and the two loss limits (0: off)."""

    start_balance_usd: float = 50_000.0
    max_loss_limit_usd: float = 0.0
    daily_loss_limit_usd: float = 0.0

    @property
    def enabled(self) -> bool:
        """Say whether either rule is on."""
        return self.max_loss_limit_usd > 0 or self.daily_loss_limit_usd > 0


@dataclass(slots=True)
class PropAccount:
    """What the rules remember across days (and restarts): balance, high, floor, day."""

    balance_usd: float
    eod_high_usd: float
    floor_usd: float
    day: int = -1
    day_start_balance_usd: float = 0.0

    @classmethod
    def opening(cls, limits: PropLimits) -> PropAccount:
        """Return a fresh account at its starting balance."""
        start = limits.start_balance_usd
        return cls(start, start, start - limits.max_loss_limit_usd, -1, start)

    def to_dict(self) -> dict[str, Any]:
        """Return the account as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PropAccount:
        """Return an account saved by `to_dict`; raise ValueError naming a bad field."""
        try:
            return cls(
                balance_usd=float(raw["balance_usd"]),
                eod_high_usd=float(raw["eod_high_usd"]),
                floor_usd=float(raw["floor_usd"]),
                day=int(raw["day"]),
                day_start_balance_usd=float(raw["day_start_balance_usd"]),
            )
        except KeyError as exc:
            raise ValueError(f"prop account state: missing field {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"prop account state: bad value ({exc})") from None


class PropRules:
    """TopstepX's Maximum Loss Limit (trailing, end-of-day) and Daily Loss Limit.

    - Maximum Loss Limit: a minimum account balance. It starts at the starting
      balance minus the limit and is moved only between trading days, to the
      end-of-day balance high minus the limit, never down, and never above the
      starting balance (there it stays for good). Intraday, the balance including
      open PnL at or below the floor breaks the rule.
    - Daily Loss Limit: the trading day's net PnL (realised after commissions, plus
      open PnL after the round-turn commission) at or below minus the limit breaks
      it until the next trading day (18:00 ET = 17:00 CT).
    """

    def __init__(self, limits: PropLimits, account: PropAccount | None = None) -> None:
        self.limits = limits
        self.account = account or PropAccount.opening(limits)

    def new_day(self, day: int) -> None:
        """Close the previous trading day (move the floor) and open `day`."""
        acct = self.account
        if day == acct.day:
            return
        if acct.day >= 0:
            acct.eod_high_usd = max(acct.eod_high_usd, acct.balance_usd)
            mll = self.limits.max_loss_limit_usd
            if mll > 0:
                trailed = max(acct.floor_usd, acct.eod_high_usd - mll)
                acct.floor_usd = min(trailed, self.limits.start_balance_usd)
        acct.day = day
        acct.day_start_balance_usd = acct.balance_usd

    def realised(self, pnl_usd: float) -> None:
        """Book a closed trade's PnL (after commissions)."""
        self.account.balance_usd += pnl_usd

    def day_pnl_usd(self, open_pnl_usd: float = 0.0) -> float:
        """Return today's net PnL: realised since the day started plus open PnL."""
        acct = self.account
        return acct.balance_usd - acct.day_start_balance_usd + open_pnl_usd

    def breach(self, open_pnl_usd: float) -> str | None:
        """Return the rule the account breaks with this open PnL, or None."""
        lim, acct = self.limits, self.account
        if lim.max_loss_limit_usd > 0 and acct.balance_usd + open_pnl_usd <= acct.floor_usd:
            return MAX_LOSS_LIMIT
        if lim.daily_loss_limit_usd > 0 and (
            self.day_pnl_usd(open_pnl_usd) <= -lim.daily_loss_limit_usd
        ):
            return DAILY_LOSS_LIMIT
        return None

    def headroom_usd(self) -> float:
        """Return how much more may be lost (realised) before a rule breaks."""
        lim, acct = self.limits, self.account
        room = float("inf")
        if lim.max_loss_limit_usd > 0:
            room = acct.balance_usd - acct.floor_usd
        if lim.daily_loss_limit_usd > 0:
            room = min(room, lim.daily_loss_limit_usd + self.day_pnl_usd())
        return room

    def state(self, open_pnl_usd: float = 0.0) -> dict[str, Any]:
        """Return the account and limits for /healthz."""
        acct = self.account
        return {
            "start_balance_usd": self.limits.start_balance_usd,
            "balance_usd": round(acct.balance_usd, 2),
            "open_pnl_usd": round(open_pnl_usd, 2),
            "eod_high_usd": round(acct.eod_high_usd, 2),
            "max_loss_limit_usd": self.limits.max_loss_limit_usd,
            "floor_usd": round(acct.floor_usd, 2) if self.limits.max_loss_limit_usd else None,
            "daily_loss_limit_usd": self.limits.daily_loss_limit_usd,
            "day_pnl_usd": round(self.day_pnl_usd(open_pnl_usd), 2),
        }


def open_pnl_usd(
    side: int,
    quantity: int,
    entry_price: float,
    price: float,
    point_value_usd: float,
    commission_per_contract_usd: float,
) -> float:
    """Return a position's PnL if closed at `price`, after its round-turn commission."""
    gross = (price - entry_price) * side * point_value_usd * quantity
    return gross - 2.0 * commission_per_contract_usd * quantity


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
    prop: PropLimits = PropLimits()

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
            prop=PropLimits(
                start_balance_usd=s.prop_start_balance_usd,
                max_loss_limit_usd=s.prop_max_loss_limit_usd,
                daily_loss_limit_usd=s.prop_daily_loss_limit_usd,
            ),
        )


@dataclass(slots=True)
class Hold:
    """A named reason that refuses every entry, maybe until a trading day starts."""

    why: str
    until_day: int | None = None


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
        self.holds: dict[str, Hold] = {}
        self.prop = PropRules(limits.prop) if limits.prop.enabled else None
        self.open_pnl: dict[str, float] = {}  # symbol -> open PnL of real positions
        self.breaches: list[str] = []  # prop-firm breaches not yet acted on (oldest first)
        #: called with the account whenever it changes (persistence across restarts)
        self.on_prop_change: Callable[[PropAccount], None] | None = None
        #: called with (name, trading day) when a hold expires; default: release it
        self.on_hold_expired: dict[str, Callable[[int], object]] = {}

    def new_bar(self, trading_day: int) -> None:
        """Roll the daily counters when a new trading day starts."""
        if trading_day != self.day:
            self.day = trading_day
            self.daily_pnl_usd = 0.0
            self.halted = False
            for name, hold in list(self.holds.items()):
                if hold.until_day is not None and trading_day >= hold.until_day:
                    expired = self.on_hold_expired.get(name)
                    if expired is not None:
                        expired(trading_day)
                    else:
                        self.release(name)
            if self.prop is not None:
                self.prop.new_day(trading_day)
                self._prop_changed()

    # holds ----------------------------------------------------------------

    def hold(self, name: str, why: str, until_day: int | None = None) -> None:
        """Refuse every entry with reason `name` until released (or `until_day` starts)."""
        self.holds[name] = Hold(why, until_day)

    def release(self, name: str) -> None:
        """Lift the hold `name` (no-op when absent)."""
        self.holds.pop(name, None)

    def entry_block(self) -> str | None:
        """Return why entries are refused by a hold (one line per hold), or None."""
        if not self.holds:
            return None
        return "; ".join(f"{name}: {h.why}" for name, h in self.holds.items())

    # entries --------------------------------------------------------------

    @property
    def open_positions(self) -> int:
        """Return the number of open or pending real positions."""
        return sum(self.positions.values())

    def check(
        self, symbol: str, contracts: int, stop_usd_per_contract: float, now_s: int
    ) -> tuple[int, str]:
        """Return (allowed contracts, reason); reason is "taken" when allowed > 0."""
        lim = self.limits
        if self.holds:
            return 0, self._reject(next(iter(self.holds)))
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
        if self.prop is not None:
            budget = min(budget, self.prop.headroom_usd() + min(0.0, self.open_pnl_total))
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
        if self.prop is not None:
            self.prop.realised(pnl_usd)
            self._prop_changed()

    def cancelled(self, symbol: str) -> None:
        """Forget a real position that never filled."""
        self.positions[symbol] = max(0, self.positions.get(symbol, 0) - 1)

    # prop-firm rules ------------------------------------------------------

    @property
    def open_pnl_total(self) -> float:
        """Return the open PnL of every real position, as last marked."""
        return sum(self.open_pnl.values())

    def mark(self, symbol: str, open_pnl: float) -> str | None:
        """Record a symbol's open PnL; on a new prop-firm breach hold entries and return it.

        A breach is reported once: the Daily Loss Limit holds until the next
        trading day, the Maximum Loss Limit until released. It is also queued in
        `breaches` for whoever acts on it (the kill switch).
        """
        self.open_pnl[symbol] = open_pnl
        if self.prop is None:
            return None
        breach = self.prop.breach(self.open_pnl_total)
        if breach is None or breach in self.holds:
            return None
        if breach == DAILY_LOSS_LIMIT:
            why = (
                f"day's net PnL {self.prop.day_pnl_usd(self.open_pnl_total):.2f} USD reached "
                f"the daily loss limit of {self.limits.prop.daily_loss_limit_usd:.2f} USD"
            )
            self.hold(breach, why, self.day + 1 if self.day >= 0 else None)
        else:
            acct = self.prop.account
            why = (
                f"balance {acct.balance_usd + self.open_pnl_total:.2f} USD (with open PnL) "
                f"reached the maximum loss limit floor of {acct.floor_usd:.2f} USD"
            )
            self.hold(breach, why)
        self.breaches.append(breach)
        return breach

    def _prop_changed(self) -> None:
        if self.prop is not None and self.on_prop_change is not None:
            self.on_prop_change(self.prop.account)

    def state(self) -> dict[str, object]:
        """Return the risk state for /healthz."""
        return {
            "daily_pnl_usd": round(self.daily_pnl_usd, 2),
            "halted": self.halted,
            "loss_streak": self.loss_streak,
            "cooldown_until_s": self.cooldown_until_s,
            "open_positions": self.open_positions,
            "rejections": dict(self.rejections),
            "holds": {n: {"why": h.why, "until_day": h.until_day} for n, h in self.holds.items()},
            "prop": self.prop.state(self.open_pnl_total) if self.prop is not None else None,
        }
