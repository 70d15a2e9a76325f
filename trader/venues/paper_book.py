"""The paper venue's book records and the order events it builds from them.

`PaperOrder` is the venue's record of one order, `PendingEntry` an entry filling
outside the market-order path (a limit, or capped by `max_fill_per_bar`), and
`PaperOrderEvents` the part of `PaperVenue` that turns its records into order
events stamped with market time, held back while the session is down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from infra.contracts import (
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRole,
    OrderSide,
    OrderSubmitted,
    OrderType,
    VenueEvent,
    utc_now,
)
from infra.settings import Settings
from trader.core.bar import MarketBar
from trader.venues.base import BracketOrder, ConnectionState

__all__ = ["PaperOrder", "PaperOrderEvents", "PaperVenueSettings", "PendingEntry"]


class PaperVenueSettings(BaseModel):
    """The paper venue's fill model (read from `SLIPPAGE_TICKS`, `COMMISSION_PER_CONTRACT_USD`, ...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    slippage_ticks: float = Field(default=1.0, ge=0)
    commission_per_contract_usd: float = Field(default=2.25, ge=0)
    flatten_at_session_end: bool = True
    max_hold_bars: int = Field(default=240, gt=0)
    max_fill_per_bar: int | None = Field(default=None, gt=0)
    max_order_quantity: int = Field(default=1000, gt=0)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> PaperVenueSettings:
        """Return the paper venue settings of the process settings."""
        values: dict[str, Any] = {
            "slippage_ticks": settings.slippage_ticks,
            "commission_per_contract_usd": settings.commission_per_contract_usd,
            "flatten_at_session_end": settings.flatten_at_session_end,
        }
        return cls(**{**values, **overrides})


class PaperOrder:
    """The venue's record of one order."""

    __slots__ = (
        "bracket",
        "client_order_id",
        "filled",
        "ids",
        "limit_price",
        "order_type",
        "parent_id",
        "quantity",
        "role",
        "side",
        "stop_price",
        "symbol",
        "venue_order_id",
    )

    def __init__(
        self,
        client_order_id: str,
        symbol: str,
        role: OrderRole,
        side: OrderSide,
        quantity: int,
        order_type: OrderType,
        venue_order_id: str,
        bracket: BracketOrder,
        limit_price: float | None = None,
        stop_price: float | None = None,
        parent_id: str = "",
    ) -> None:
        self.client_order_id = client_order_id
        self.symbol = symbol
        self.role = role
        self.side = side
        self.quantity = quantity
        self.order_type = order_type
        self.venue_order_id = venue_order_id
        self.bracket = bracket
        self.limit_price = limit_price
        self.stop_price = stop_price
        self.parent_id = parent_id
        self.filled = 0
        self.ids: dict[str, Any] | None = None


class PendingEntry:
    """A bracket's entry filling outside the market-order path (limit or capped)."""

    __slots__ = ("avg_price", "commission", "order")

    def __init__(self, order: PaperOrder) -> None:
        self.order = order
        self.avg_price = 0.0
        self.commission = 0.0


class PaperOrderEvents:
    """Build and publish the order events of the paper venue's records (a `PaperVenue` part)."""

    name: ClassVar[str]
    source: str
    run_id: str
    config: PaperVenueSettings
    contracts: dict[str, str]
    _state: ConnectionState
    _held: list[VenueEvent]
    _last: dict[str, MarketBar]
    _clock: dict[str, tuple[int, datetime]]
    _orders: dict[str, PaperOrder]
    _used: set[str]
    _ids: Iterator[int]
    _publish: Callable[[VenueEvent], None]

    def _ts(self, symbol: str) -> datetime:
        """Return the market time of a symbol (its last bar's close) or, before any bar, now."""
        bar = self._last.get(symbol)
        if bar is None:
            return utc_now()
        clock = self._clock.get(symbol)
        if clock is None or clock[0] != bar.ts_s:
            clock = self._clock[symbol] = (bar.ts_s, bar.ts_event)
        return clock[1]

    def _emit(self, event: VenueEvent) -> None:
        if self._state is ConnectionState.CONNECTED:
            self._publish(event)
        else:
            self._held.append(event)

    def _common(self, o: PaperOrder) -> dict[str, Any]:
        ids = o.ids
        if ids is None:  # what every event of the order carries, built once
            ids = o.ids = {
                "venue": self.name,
                "symbol": o.symbol,
                "contract": o.bracket.contract or self.contracts.get(o.symbol, ""),
                "source": self.source,
                "run_id": self.run_id,
                "client_order_id": o.client_order_id,
                "venue_order_id": o.venue_order_id,
            }
        return {"ts_event": self._ts(o.symbol), **ids}

    def _submitted(self, o: PaperOrder, reason: str = "") -> None:
        b = o.bracket
        self._emit(
            OrderSubmitted.checked(
                **self._common(o),
                role=o.role,
                side=o.side,
                quantity=o.quantity,
                order_type=o.order_type,
                limit_price=o.limit_price,
                stop_price=o.stop_price,
                parent_id=o.parent_id,
                oco_group=b.client_order_id if o.role in ("stop", "target") else "",
                signal_id=b.signal_id,
                strategy=b.strategy,
                reason=reason,
            )
        )

    def _accepted(self, o: PaperOrder) -> None:
        self._emit(
            OrderAccepted.checked(
                **self._common(o),
                quantity=o.quantity,
                limit_price=o.limit_price,
                stop_price=o.stop_price,
            )
        )

    def _filled(self, o: PaperOrder, price: float, quantity: int) -> float:
        o.filled += quantity
        commission = self.config.commission_per_contract_usd * quantity
        self._emit(
            OrderFilled.checked(
                **self._common(o),
                role=o.role,
                side=o.side,
                fill_price=price,
                quantity=quantity,
                cumulative_quantity=o.filled,
                leaves_quantity=o.quantity - o.filled,
                commission_usd=commission,
                venue_fill_id=f"{o.venue_order_id}-F{o.filled}",
            )
        )
        if o.filled >= o.quantity:
            self._orders.pop(o.client_order_id, None)
        return commission

    def _done(self, o: PaperOrder, reason: str, expired: bool = False) -> None:
        self._orders.pop(o.client_order_id, None)
        cls = OrderExpired if expired else OrderCancelled
        self._emit(cls.checked(**self._common(o), reason=reason, cumulative_quantity=o.filled))

    def _new_order(
        self,
        bracket: BracketOrder,
        client_order_id: str,
        role: OrderRole,
        side: OrderSide,
        quantity: int,
        order_type: OrderType,
        **prices: Any,
    ) -> PaperOrder:
        o = PaperOrder(
            client_order_id,
            bracket.symbol,
            role,
            side,
            quantity,
            order_type,
            f"P{next(self._ids)}",
            bracket,
            parent_id="" if role == "entry" else bracket.client_order_id,
            **prices,
        )
        self._used.add(client_order_id)
        return o
