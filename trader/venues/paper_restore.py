"""The paper venue's restart: its book rebuilt from the order events it published.

`PaperRestore` is the part of `PaperVenue` that a restarted process calls before
its first bar (`restore`), with the events the journal kept.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

from infra.contracts import OrderAccepted, OrderEvent, OrderFilled, OrderSubmitted, VenueEvent
from trader.core.instruments import Instrument
from trader.venues.base import BracketOrder, VenueError, child_order_id
from trader.venues.fills import PaperBroker
from trader.venues.fills import Position as FillPosition
from trader.venues.paper_book import PaperOrder, PaperOrderEvents

__all__ = ["PaperRestore"]


class PaperRestore(PaperOrderEvents):
    """Rebuild a restarted paper venue's book from its order events (a `PaperVenue` part)."""

    instruments: dict[str, Instrument]
    book: PaperBroker
    _positions: dict[str, FillPosition]
    _busy: set[str]

    def restore(self, events: Iterable[VenueEvent]) -> list[str]:
        """Rebuild the book of a restarted process from the order events this venue published.

        Filled brackets come back open at their entry price with their stop and
        target working at their last accepted prices; a filled entry whose children
        were never placed comes back as a position with no order working. An entry that had not filled
        completely cannot be rebuilt (its distances were never published): it
        expires now (`OrderExpired`, reason `venue restarted`). Return the entry
        ids of the brackets restored. The book must be empty.
        """
        if self._orders or any(self.book.open.values()) or any(self.book.pending.values()):
            raise VenueError("restore needs an empty book (a freshly started venue)")
        subs: dict[str, OrderSubmitted] = {}
        terms: dict[str, OrderAccepted] = {}
        fills: dict[str, list[OrderFilled]] = {}
        ended: set[str] = set()
        top = 0
        for e in events:
            if not isinstance(e, OrderEvent):
                continue
            cid = e.client_order_id
            if e.venue_order_id.startswith("P") and e.venue_order_id[1:].isdigit():
                top = max(top, int(e.venue_order_id[1:]))
            if isinstance(e, OrderSubmitted):
                subs[cid] = e
            elif isinstance(e, OrderAccepted):
                terms[cid] = e
            elif isinstance(e, OrderFilled):
                fills.setdefault(cid, []).append(e)
                if e.leaves_quantity == 0:
                    ended.add(cid)
            else:
                ended.add(cid)
        self._ids = itertools.count(top + 1)
        self._used.update(subs)
        restored: list[str] = []
        for cid, sub in subs.items():
            if sub.role != "entry" or (cid in ended and not fills.get(cid)):
                continue
            self._used.update(child_order_id(cid, r) for r in ("stop", "target", "flatten"))
            got = fills.get(cid, [])
            filled = sum(f.quantity for f in got)
            if filled < sub.quantity:
                o = self._restored_order(sub, terms.get(cid), None)
                o.filled = filled
                self._done(o, "venue restarted", expired=True)
                if filled == 0:
                    continue
            stop_sub, target_sub = (
                subs.get(child_order_id(cid, "stop")),
                subs.get(child_order_id(cid, "target")),
            )
            if stop_sub is None or target_sub is None:  # died between the fill and its children
                self._restore_unprotected(sub, got, filled)
                restored.append(cid)
                continue
            children = [c for c in (stop_sub, target_sub) if c.client_order_id not in ended]
            exited = sum(
                f.quantity
                for leg in (stop_sub, target_sub)
                for f in fills.get(leg.client_order_id, [])
            )
            if (
                exited >= filled
            ):  # an exit closed it; a kill may have beaten the sibling's OCO cancel
                for child in children:
                    o = self._restored_order(child, terms.get(child.client_order_id), None)
                    self._done(o, "oco")
                continue
            if not children:  # the bracket closed: nothing left to restore
                continue
            avg = sum(f.fill_price * f.quantity for f in got) / filled
            sign = 1 if sub.side == "buy" else -1
            stop_price = (terms.get(stop_sub.client_order_id) or stop_sub).stop_price or 0.0
            target_price = (terms.get(target_sub.client_order_id) or target_sub).limit_price or 0.0
            bracket = BracketOrder(
                cid,
                sub.symbol,
                sub.side,
                filled,
                abs(avg - stop_price) or self.instruments[sub.symbol].tick_size,
                abs(target_price - avg) or self.instruments[sub.symbol].tick_size,
                contract=sub.contract,
                signal_id=sub.signal_id,
                strategy=sub.strategy,
            )
            self._hold_restored(
                bracket,
                sub,
                got,
                stop_price if stop_sub in children else -sign * math.inf,
                target_price if target_sub in children else sign * math.inf,
            )
            for child in children:
                o = self._restored_order(child, terms.get(child.client_order_id), bracket)
                self._orders[o.client_order_id] = o
            restored.append(cid)
        return restored

    def _restore_unprotected(
        self, sub: OrderSubmitted, got: list[OrderFilled], filled: int
    ) -> None:
        """Hold the position of a filled entry whose stop and target were never placed.

        The exchange keeps such a position; with no child orders it waits for a flatten
        (the trader's start-up flattens it: `trader.recovery`).
        """
        sign = 1 if sub.side == "buy" else -1
        tick = self.instruments[sub.symbol].tick_size
        bracket = BracketOrder(
            sub.client_order_id,
            sub.symbol,
            sub.side,
            filled,
            tick,
            tick,
            contract=sub.contract,
            signal_id=sub.signal_id,
            strategy=sub.strategy,
        )
        self._hold_restored(bracket, sub, got, -sign * math.inf, sign * math.inf)

    def _hold_restored(
        self,
        bracket: BracketOrder,
        sub: OrderSubmitted,
        got: list[OrderFilled],
        stop: float,
        target: float,
    ) -> None:
        """Put a restored bracket's filled entry back in the book as an open position."""
        filled = sum(f.quantity for f in got)
        entry = self._restored_order(sub, None, bracket)
        entry.filled = filled
        p = FillPosition(
            entry,
            sub.symbol,
            sub.strategy,
            1 if sub.side == "buy" else -1,
            filled,
            bracket.stop_distance,
            bracket.target_distance,
            counterfactual=False,
        )
        p.entry_price = sum(f.fill_price * f.quantity for f in got) / filled
        p.entry_ts_s = int(got[-1].ts_event.timestamp())
        p.stop, p.target = stop, target
        self.book.open.setdefault(sub.symbol, []).append(p)
        self._busy.add(sub.symbol)
        self._positions[sub.client_order_id] = p

    def _restored_order(
        self, sub: OrderSubmitted, accepted: OrderAccepted | None, bracket: BracketOrder | None
    ) -> PaperOrder:
        """Return the venue's record of a published order (at its last accepted terms)."""
        return PaperOrder(
            sub.client_order_id,
            sub.symbol,
            sub.role,
            sub.side,
            accepted.quantity if accepted else sub.quantity,
            sub.order_type,
            sub.venue_order_id or (accepted.venue_order_id if accepted else ""),
            bracket
            or BracketOrder(sub.client_order_id, sub.symbol, sub.side, sub.quantity, 1.0, 1.0),
            limit_price=accepted.limit_price if accepted else sub.limit_price,
            stop_price=accepted.stop_price if accepted else sub.stop_price,
            parent_id=sub.parent_id,
        )
