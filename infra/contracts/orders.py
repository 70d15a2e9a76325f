"""Order contracts: what a venue did with an order, carried on the `orders` topic."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from infra.contracts.base import Event

__all__ = [
    "OrderAccepted",
    "OrderCancelled",
    "OrderEvent",
    "OrderExpired",
    "OrderFilled",
    "OrderRejected",
    "OrderRole",
    "OrderSide",
    "OrderSubmitted",
    "OrderType",
    "PositionReconciled",
    "VenueEvent",
]


OrderRole = Literal["entry", "stop", "target", "flatten"]
OrderSide = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop"]


class VenueEvent(Event):
    """Base of what the `orders` topic carries (not a contract itself): a venue's fact."""

    SCHEMA_NAME: ClassVar[str] = "venue_event"
    venue: str = Field(min_length=1)
    symbol: str = Field(min_length=1)
    contract: str = ""  # the futures contract (e.g. "ESZ4"); empty without a roll calendar
    source: str = "live"
    run_id: str = ""


class OrderEvent(VenueEvent):
    """Base of the events of one order, named by its client order id."""

    SCHEMA_NAME: ClassVar[str] = "order_event"
    client_order_id: str = Field(min_length=1)
    venue_order_id: str = ""  # the venue's id, once the venue gave one


class OrderSubmitted(OrderEvent):
    """An order was sent to the venue: a bracket's entry, one of its OCO children, or a flatten."""

    SCHEMA_NAME: ClassVar[str] = "order_submitted"
    role: OrderRole
    side: OrderSide
    quantity: int = Field(gt=0)
    order_type: OrderType
    limit_price: float | None = Field(default=None, gt=0)
    stop_price: float | None = Field(default=None, gt=0)
    parent_id: str = ""  # children: the client order id of the bracket's entry
    oco_group: str = ""  # children: the stop and target cancel each other
    signal_id: str = ""
    strategy: str = ""
    reason: str = ""  # flatten: why (session_end, timeout, shutdown, risk_flatten, ...)

    @model_validator(mode="after")
    def _prices(self) -> OrderSubmitted:
        if self.order_type == "limit" and self.limit_price is None:
            raise ValueError("a limit order needs limit_price")
        if self.order_type == "stop" and self.stop_price is None:
            raise ValueError("a stop order needs stop_price")
        return self


class OrderAccepted(OrderEvent):
    """The venue is working an order at these terms (again after each modification)."""

    SCHEMA_NAME: ClassVar[str] = "order_accepted"
    quantity: int = Field(gt=0)
    limit_price: float | None = Field(default=None, gt=0)
    stop_price: float | None = Field(default=None, gt=0)


class OrderRejected(OrderEvent):
    """The venue refused an order; `reason` is the venue's own words."""

    SCHEMA_NAME: ClassVar[str] = "order_rejected"
    reason: str = Field(min_length=1)


class OrderFilled(OrderEvent):
    """An order (partly) filled: `quantity` now, `cumulative_quantity` so far."""

    SCHEMA_NAME: ClassVar[str] = "order_filled"
    role: OrderRole
    side: OrderSide
    fill_price: float = Field(gt=0)
    quantity: int = Field(gt=0)
    cumulative_quantity: int = Field(gt=0)
    leaves_quantity: int = Field(default=0, ge=0)  # what is still working after this fill
    commission_usd: float = Field(default=0.0, ge=0)
    venue_fill_id: str = Field(min_length=1)

    @model_validator(mode="after")
    def _cumulative(self) -> OrderFilled:
        if self.cumulative_quantity < self.quantity:
            raise ValueError(
                f"cumulative_quantity {self.cumulative_quantity} < quantity {self.quantity}"
            )
        return self


class OrderCancelled(OrderEvent):
    """An order stopped working before it filled completely (requested, OCO, shutdown)."""

    SCHEMA_NAME: ClassVar[str] = "order_cancelled"
    reason: str = ""
    cumulative_quantity: int = Field(default=0, ge=0)


class OrderExpired(OrderEvent):
    """An order's time in force ran out before it filled completely."""

    SCHEMA_NAME: ClassVar[str] = "order_expired"
    reason: str = ""
    cumulative_quantity: int = Field(default=0, ge=0)


class PositionReconciled(VenueEvent):
    """After a (re)start: the venue's position against the one rebuilt from the order events."""

    SCHEMA_NAME: ClassVar[str] = "position_reconciled"
    quantity: int  # the venue's: > 0 long, < 0 short
    avg_price: float = Field(default=0.0, ge=0)
    expected_quantity: int = 0  # rebuilt from our own order events
    expected_avg_price: float = Field(default=0.0, ge=0)
    status: Literal["matched", "adopted", "unexplained"]
    working_orders: tuple[str, ...] = ()  # client order ids the venue still works
    detail: str = ""
