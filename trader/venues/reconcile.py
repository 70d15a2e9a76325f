"""Reconciliation: the venue's positions and working orders against our own order events.

On start and after every reconnect the trader compares, per symbol, what the venue
reports with what its order journal rebuilds (`trader.venues.ledger`) and emits one
`PositionReconciled` per symbol:

- `matched`: same net quantity (and average price within half a tick) and the same
  working orders.
- `adopted`: a difference with one explanation, taken over:
  - the venue works fewer of our orders and the position still matches: they
    ended (filled OCO sibling, cancelled, expired) while we were away;
  - the venue is flat where we expected a position, and that position's bracket
    child (stop or target) no longer works: the child filled while we were away;
  - the venue holds a position we did not see fill, and the bracket children of one
    of our own entries work at the venue, sized to that position: the entry filled
    while we were away.
- `unexplained`: anything else (a position without our bracket, orders we never
  sent, quantities that do not add up). New entries stay refused (a risk hold
  named `reconciliation`, shown on `/healthz`) until a later reconciliation finds
  no unexplained difference.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from infra.contracts import OrderSubmitted, PositionReconciled, VenueEvent
from trader.venues.base import Position, Venue, WorkingOrder, child_order_id
from trader.venues.ledger import Ledger

__all__ = ["RECONCILE_HOLD", "Reconciliation", "known_order_ids", "reconcile"]

#: The name of the risk hold placed while a difference stays unexplained.
RECONCILE_HOLD = "reconciliation"


class Holds(Protocol):
    """Where entry holds are kept (`trader.core.risk.RiskManager`)."""

    def hold(self, name: str, why: str, until_day: int | None = None) -> None: ...

    def release(self, name: str) -> None: ...


@dataclass
class Reconciliation:
    """The outcome of one comparison: an event per symbol and what stays unexplained."""

    events: list[PositionReconciled] = field(default_factory=list)
    at: str = ""
    elapsed_ms: float = 0.0
    trigger: str = "start"

    @property
    def unexplained(self) -> list[PositionReconciled]:
        """Return the symbols whose difference has no explanation."""
        return [e for e in self.events if e.status == "unexplained"]

    @property
    def clean(self) -> bool:
        """Say whether nothing stays unexplained."""
        return not self.unexplained

    def why_refused(self) -> str | None:
        """Return the line /healthz shows while entries are refused, or None."""
        if self.clean:
            return None
        parts = "; ".join(f"{e.symbol}: {e.detail}" for e in self.unexplained)
        return f"unexplained venue state after {self.trigger} ({parts})"

    def status(self) -> dict[str, Any]:
        """Return the comparison for /healthz."""
        return {
            "at": self.at,
            "trigger": self.trigger,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "clean": self.clean,
            "symbols": {
                e.symbol: {
                    "status": e.status,
                    "venue_quantity": e.quantity,
                    "expected_quantity": e.expected_quantity,
                    "working_orders": list(e.working_orders),
                    "detail": e.detail,
                }
                for e in self.events
            },
        }


def _by_symbol(orders: list[WorkingOrder]) -> dict[str, dict[str, WorkingOrder]]:
    out: dict[str, dict[str, WorkingOrder]] = {}
    for w in orders:
        out.setdefault(w.symbol, {})[w.client_order_id] = w
    return out


def _judge(
    venue_pos: Position | None,
    expected_pos: Position | None,
    venue_orders: dict[str, WorkingOrder],
    expected_orders: dict[str, WorkingOrder],
    known_ids: set[str],
    tick: float,
) -> tuple[str, str]:
    """Return (status, detail) for one symbol."""
    vq = venue_pos.quantity if venue_pos else 0
    eq = expected_pos.quantity if expected_pos else 0
    foreign = sorted(set(venue_orders) - known_ids)
    if foreign:
        return "unexplained", f"the venue works orders we never sent: {', '.join(foreign)}"
    gone = sorted(set(expected_orders) - set(venue_orders))
    new = sorted(set(venue_orders) - set(expected_orders))
    if vq == eq:
        if eq != 0 and venue_pos and expected_pos:
            gap = abs(venue_pos.avg_price - expected_pos.avg_price)
            if gap > tick / 2:
                return "unexplained", (
                    f"same quantity {vq} but average price {venue_pos.avg_price} at the venue, "
                    f"{expected_pos.avg_price} from our fills"
                )
        if not gone and not new:
            return "matched", f"quantity {vq}, {len(venue_orders)} working orders"
        detail = []
        if gone:
            detail.append(f"ended while away: {', '.join(gone)}")
        if new:
            detail.append(f"working again at the venue: {', '.join(new)}")
        return "adopted", "; ".join(detail)
    children = [w for w in venue_orders.values() if w.role in ("stop", "target")]
    if vq == 0:
        lost = [
            w
            for w in expected_orders.values()
            if w.role in ("stop", "target") and w.client_order_id in gone
        ]
        if lost:
            return "adopted", (
                f"flat at the venue where we held {eq}: bracket child "
                f"{', '.join(w.client_order_id for w in lost)} filled while away"
            )
        return (
            "unexplained",
            f"flat at the venue where we held {eq}, and no bracket child of ours ended",
        )
    entries = {w.parent_id for w in children if w.parent_id}
    if len(entries) == 1 and eq == 0:
        protected = {w.quantity - w.filled_quantity for w in children}
        if protected == {abs(vq)}:
            (entry,) = entries
            return "adopted", (
                f"position {vq} at the venue with the working bracket of our entry {entry}: "
                "it filled while away"
            )
    return "unexplained", (
        f"position {vq} at the venue, {eq} from our own order events"
        + (f"; working: {', '.join(sorted(venue_orders))}" if venue_orders else "; nothing works")
    )


def reconcile(
    venue: Venue,
    ledger: Ledger,
    *,
    known_ids: set[str],
    tick_sizes: Mapping[str, float],
    symbols: tuple[str, ...] = (),
    holds: Holds | None = None,
    trigger: str = "start",
) -> Reconciliation:
    """Compare the venue with the ledger, per symbol; hold entries while anything is unexplained.

    `known_ids` are the client order ids our own events name (submitted by us).
    """
    t0 = time.perf_counter()
    now = datetime.now(UTC)
    venue_pos = {p.symbol: p for p in venue.positions()}
    expected_pos = {p.symbol: p for p in ledger.positions()}
    venue_orders = _by_symbol(venue.working_orders())
    expected_orders = _by_symbol(list(ledger.working.values()))
    every = sorted(
        set(symbols) | set(venue_pos) | set(expected_pos) | set(venue_orders) | set(expected_orders)
    )
    result = Reconciliation(at=now.isoformat(), trigger=trigger)
    for symbol in every:
        vp, ep = venue_pos.get(symbol), expected_pos.get(symbol)
        vo, eo = venue_orders.get(symbol, {}), expected_orders.get(symbol, {})
        status, detail = _judge(vp, ep, vo, eo, known_ids, tick_sizes.get(symbol, 0.0))
        result.events.append(
            PositionReconciled(
                ts_event=now,
                venue=venue.name,
                symbol=symbol,
                contract=(vp.contract if vp else ""),
                source=venue.source,
                run_id=venue.run_id,
                quantity=vp.quantity if vp else 0,
                avg_price=vp.avg_price if vp else 0.0,
                expected_quantity=ep.quantity if ep else 0,
                expected_avg_price=ep.avg_price if ep else 0.0,
                status=status,  # type: ignore[arg-type]
                working_orders=tuple(sorted(vo)),
                detail=detail,
            )
        )
    result.elapsed_ms = (time.perf_counter() - t0) * 1000.0
    if holds is not None:
        why = result.why_refused()
        if why is None:
            holds.release(RECONCILE_HOLD)
        else:
            holds.hold(RECONCILE_HOLD, why)
    return result


def known_order_ids(events: list[VenueEvent]) -> set[str]:
    """Return the client order ids we sent: submitted ones, and every bracket child of our entries."""
    ids: set[str] = set()
    for e in events:
        if isinstance(e, OrderSubmitted):
            ids.add(e.client_order_id)
            if e.role == "entry":
                ids.update(
                    child_order_id(e.client_order_id, r) for r in ("stop", "target", "flatten")
                )
    return ids
