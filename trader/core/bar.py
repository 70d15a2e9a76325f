"""The engine's bar: one OHLCV bar, cheap to create, convertible to and from the `Bar` event."""

from __future__ import annotations

from datetime import UTC, datetime

from features.rolls import ROLL_DAYS_BEFORE_EXPIRY, front_contract
from infra.contracts import Bar

__all__ = ["MarketBar"]


class MarketBar:
    """One bar inside the trader (cheap to create); `ts_s` is the close, epoch seconds UTC."""

    __slots__ = ("close", "high", "interval_s", "low", "open", "symbol", "ts_s", "volume")

    def __init__(
        self,
        symbol: str,
        ts_s: int,
        open: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        interval_s: int = 60,
    ) -> None:
        self.symbol = symbol
        self.ts_s = ts_s
        self.open = open
        self.high = high
        self.low = low
        self.close = close
        self.volume = volume
        self.interval_s = interval_s

    @property
    def ts_event(self) -> datetime:
        """Return the close time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.ts_s, UTC)

    def to_event(self, source: str, roll_days: int = ROLL_DAYS_BEFORE_EXPIRY) -> Bar:
        """Return the `Bar` event of this bar, naming its front contract (`features.rolls`)."""
        return Bar(
            ts_event=self.ts_event,
            symbol=self.symbol,
            open=self.open,
            high=self.high,
            low=self.low,
            close=self.close,
            volume=self.volume,
            interval_s=self.interval_s,
            source=source,
            contract=front_contract(self.symbol, self.ts_s, roll_days),
        )

    @classmethod
    def from_event(cls, bar: Bar) -> MarketBar:
        """Return the trader bar of a `Bar` event."""
        return cls(
            bar.symbol,
            int(bar.ts_event.timestamp()),
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            bar.volume,
            bar.interval_s,
        )

    def __repr__(self) -> str:
        return (
            f"MarketBar({self.symbol} {self.ts_event:%Y-%m-%d %H:%M} "
            f"O{self.open} H{self.high} L{self.low} C{self.close} V{self.volume:g})"
        )
