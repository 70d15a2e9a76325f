"""The venue interface: one small ABC every venue (paper and real brokers) implements.

A venue routes bracket orders (an entry, market or limit, with a stop and a target
child that cancel each other) and reports what happened as order events
(`infra.contracts` `OrderSubmitted` ... `OrderExpired`). Order methods never block:
they validate, queue the request and return; the venue's answer arrives as events,
delivered in order to the synchronous listeners (the engine) and to every
`events()` iterator. Refusals the venue can know at once raise typed errors:
`DuplicateClientOrderId`, `VenueDisconnected`, `UnknownOrder`, `InvalidOrder`.

Client order ids are deterministic (`client_order_id`): derived from the signal's
symbol, strategy and bar time plus the order's role, so a replay of the same bars
produces the same ids.
"""

from __future__ import annotations

import asyncio
import hashlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

from infra.contracts import OrderRole, OrderSide, OrderType, VenueEvent

if TYPE_CHECKING:
    from trader.core.bar import MarketBar

__all__ = [
    "BracketOrder",
    "ConnectionState",
    "DuplicateClientOrderId",
    "EventStream",
    "InvalidOrder",
    "Listener",
    "Position",
    "SessionState",
    "UnknownOrder",
    "Venue",
    "VenueDisconnected",
    "VenueError",
    "WorkingOrder",
    "child_order_id",
    "client_order_id",
]

Listener = Callable[[VenueEvent], None]


class SessionState(Protocol):
    """The exchange session at the current bar (`features.compute.MarketFeatures` is one)."""

    @property
    def in_rth(self) -> bool: ...

    @property
    def minutes_to_close(self) -> int: ...


class ConnectionState(StrEnum):
    """Where a venue's session stands."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"


class VenueError(RuntimeError):
    """Base of the errors a venue raises at once (the rest arrive as `OrderRejected`)."""


class DuplicateClientOrderId(VenueError):
    """Raise when a client order id was already used on this venue."""


class VenueDisconnected(VenueError):
    """Raise when an order request needs a session and the venue has none."""


class UnknownOrder(VenueError):
    """Raise when a client order id names no order the venue works."""


class InvalidOrder(VenueError, ValueError):
    """Raise when an order request is malformed (quantity, prices, distances)."""


def client_order_id(symbol: str, strategy: str, ts_event: datetime, role: OrderRole) -> str:
    """Return the deterministic client order id of a signal's order in `role`."""
    key = f"{symbol}|{strategy}|{ts_event.isoformat()}".encode()
    return f"{hashlib.blake2b(key, digest_size=10).hexdigest()}-{role}"


def child_order_id(entry_id: str, role: OrderRole) -> str:
    """Return the id of a bracket child (stop, target) or a flatten from its entry's id."""
    return f"{entry_id.removesuffix('-entry')}-{role}"


@dataclass(frozen=True, slots=True)
class BracketOrder:
    """An entry with a stop and a target (OCO), the children placed at distances from the fill.

    `client_order_id` is the entry's; the children's come from `child_order_id`.
    Distances are in points, re-anchored at the entry's fill price by the venue.
    """

    client_order_id: str
    symbol: str
    side: OrderSide
    quantity: int
    stop_distance: float
    target_distance: float
    entry_type: Literal["market", "limit"] = "market"
    limit_price: float | None = None
    contract: str = ""
    signal_id: str = ""
    strategy: str = ""

    def __post_init__(self) -> None:
        if not self.client_order_id:
            raise InvalidOrder("client_order_id must not be empty")
        if self.side not in ("buy", "sell"):
            raise InvalidOrder(f"side must be 'buy' or 'sell', not {self.side!r}")
        if self.quantity <= 0:
            raise InvalidOrder(f"quantity must be > 0, not {self.quantity}")
        if not (self.stop_distance > 0 and self.target_distance > 0):
            raise InvalidOrder(
                f"stop and target distances must be > 0 (got {self.stop_distance}, "
                f"{self.target_distance})"
            )
        if self.entry_type == "limit" and not (self.limit_price and self.limit_price > 0):
            raise InvalidOrder("a limit entry needs limit_price > 0")

    @property
    def sign(self) -> int:
        """Return +1 for a buy entry, -1 for a sell entry."""
        return 1 if self.side == "buy" else -1

    def child_id(self, role: OrderRole) -> str:
        """Return the client order id of this bracket's child in `role`."""
        return child_order_id(self.client_order_id, role)


@dataclass(frozen=True, slots=True)
class Position:
    """A venue's net position in one symbol: quantity > 0 long, < 0 short."""

    symbol: str
    quantity: int
    avg_price: float
    contract: str = ""


@dataclass(frozen=True, slots=True)
class WorkingOrder:
    """An order the venue is working (not yet completely filled, cancelled or expired)."""

    client_order_id: str
    symbol: str
    role: OrderRole
    side: OrderSide
    quantity: int
    order_type: OrderType
    filled_quantity: int = 0
    limit_price: float | None = None
    stop_price: float | None = None
    parent_id: str = ""
    venue_order_id: str = ""
    contract: str = ""


class EventStream:
    """An async iterator over a venue's order events; subscribed when created, until `close()`."""

    def __init__(self, queues: list[asyncio.Queue[VenueEvent]]) -> None:
        self._queues = queues
        self._queue: asyncio.Queue[VenueEvent] = asyncio.Queue()
        queues.append(self._queue)

    def __aiter__(self) -> AsyncIterator[VenueEvent]:
        return self

    async def __anext__(self) -> VenueEvent:
        return await self._queue.get()

    def close(self) -> None:
        """Stop receiving events."""
        if self._queue in self._queues:
            self._queues.remove(self._queue)


class Venue(ABC):
    """Where orders go and fills come from; see the module docstring for the contract."""

    name: ClassVar[str] = "venue"
    #: The symbols whose bars `on_bar` must see now; None: every bar (the default).
    #: A simulated venue names the symbols it works orders or holds positions in.
    watching: Collection[str] | None = None

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._queues: list[asyncio.Queue[VenueEvent]] = []
        self._state = ConnectionState.DISCONNECTED
        self.source = "live"
        self.run_id = ""

    # connection ---------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """Return the connection state."""
        return self._state

    @property
    def connected(self) -> bool:
        """Say whether the venue has a session."""
        return self._state is ConnectionState.CONNECTED

    @abstractmethod
    async def connect(self) -> None:
        """Open (or re-open) the session; working orders and positions survive a reconnect."""

    @abstractmethod
    async def disconnect(self) -> None:
        """Close the session (orders at the venue keep working)."""

    # orders ------------------------------------------------------------

    @abstractmethod
    def submit_bracket(self, order: BracketOrder) -> None:
        """Send a bracket; raise `DuplicateClientOrderId`, `VenueDisconnected` or `InvalidOrder`."""

    @abstractmethod
    def modify(
        self,
        client_order_id: str,
        *,
        quantity: int | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
    ) -> None:
        """Change a working order; the venue answers with `OrderAccepted` (new terms)."""

    @abstractmethod
    def cancel(self, client_order_id: str) -> None:
        """Cancel a working order (`UnknownOrder` when it works no more)."""

    @abstractmethod
    def cancel_all(self, symbol: str | None = None) -> None:
        """Cancel every working order (of one symbol)."""

    @abstractmethod
    def flatten(self, symbol: str | None = None, reason: str = "requested") -> None:
        """Cancel working orders and close positions at market (of one symbol, or all)."""

    @abstractmethod
    def positions(self) -> list[Position]:
        """Return the venue's open positions."""

    @abstractmethod
    def working_orders(self) -> list[WorkingOrder]:
        """Return the orders the venue is working."""

    def on_bar(self, bar: MarketBar, session: SessionState) -> None:  # noqa: B027
        """Take the market's latest bar (venues that simulate fills use it; brokers do not).

        `session` is read only when needed: a venue with nothing to fill skips it.
        """

    # events ------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call `listener` with every order event, in order, as it happens."""
        self._listeners.append(listener)

    def events(self) -> EventStream:
        """Return an async iterator of every order event published from this call on, in order."""
        return EventStream(self._queues)

    def _publish(self, event: VenueEvent) -> None:
        """Deliver an event to the listeners and to every `events()` iterator."""
        for listener in self._listeners:
            listener(event)
        for queue in self._queues:
            queue.put_nowait(event)

    def _set_state(self, state: ConnectionState) -> None:
        self._state = state
