"""The `rithmic` venue's catch-up: what happened at the gateway while no session listened.

After every (re)connect the venue fetches the order history summary (324) of the
days since its last session, the fill history (3512) and the PnL plant's
positions (402), and applies them through the live path (`RithmicUpdates`), in the
order they happened: fills by id once, then the orders' final states (a cancel
after the sibling's fill is `oco`). `restore` does the same for a new process,
from the order events its predecessor published.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from async_rithmic import RithmicClient

from infra.contracts import (
    OrderAccepted,
    OrderEvent,
    OrderFilled,
    OrderRole,
    OrderSide,
    OrderSubmitted,
    OrderType,
    VenueEvent,
)
from trader.venues.base import BracketOrder, child_order_id
from trader.venues.rithmic_updates import RithmicUpdates, _Order

__all__ = ["RithmicCatchUp"]


class RithmicCatchUp(RithmicUpdates):
    """Replay the gateway's order and fill history into order events (a `RithmicVenue` part)."""

    account_id: str
    _since: datetime

    async def _catch_up(self, client: RithmicClient) -> None:
        """Replay orders and fills missed while away; take the PnL plant's positions."""
        now = datetime.now(UTC)
        account = self.account_id
        snapshots: list[Any] = []
        for day in sorted({self._since.date(), now.date() - timedelta(days=1), now.date()}):
            snapshots += await client.show_order_history_summary(
                date=day.strftime("%Y%m%d"), account_id=account
            )
        fills = await client.get_fill_history(
            start_time=self._since, end_time=now + timedelta(minutes=1), account_id=account
        )
        self._history = (snapshots, fills)
        self._replay(snapshots, fills)
        for o in self._orders.values():
            if o.unsure and not o.basket_id and not o.done:
                self._reject(o, "the gateway never received the order (connection lost)")
        self._apply_positions(await client.list_positions(account_id=account))
        self._since = now - timedelta(minutes=5)

    def _replay(self, snapshots: list[Any], fills: list[Any]) -> None:
        """Apply order snapshots and fills in the order they happened (fills by id once)."""
        latest = {s.basket_id: s for s in snapshots}
        order = sorted(latest.values(), key=lambda s: _num(s.basket_id))
        pending = sorted(fills, key=lambda f: (_num(f.basket_id), _num(f.fill_id)))
        for snap in order:
            while pending and _num(pending[0].basket_id) < _num(snap.basket_id):
                self._fill_row(pending.pop(0))
            self._apply_snapshot(snap)
            while pending and pending[0].basket_id == snap.basket_id:
                self._fill_row(pending.pop(0))
        for f in pending:
            self._fill_row(f)
        for snap in order:
            if snap.status == "complete":
                self._terminal(snap)

    def _apply_snapshot(self, snap: Any) -> None:
        o = self._identify(snap)
        if o is None or o.done or snap.report_type == "reject":
            return
        self._take_terms(o, snap)
        if not o.accepted:
            self._accept(o)

    def _terminal(self, snap: Any) -> None:
        o = self._identify(snap)
        if o is None or o.done:
            return
        kind = snap.report_type
        if kind == "reject":
            self._reject(o, snap.text or "rejected by Rithmic")
        elif kind in ("cancel", "expire"):
            self._close(o, self._cancel_reason(o), expired=kind == "expire")

    def _fill_row(self, row: Any) -> None:
        cid = self._by_basket.get(row.basket_id)
        o = self._orders.get(cid or "")
        if o is not None:
            self._apply_fill(o, row.fill_id, int(row.fill_size), float(row.fill_price))

    def restore(self, events: Iterable[VenueEvent]) -> list[str]:
        """Take back the orders of a previous process from its published order events.

        Each order is matched to the gateway's by the basket id its events carry, so
        fills, cancels, `modify` and `flatten` work on it again; what the gateway did
        while no process listened is published now, from the order and fill history
        fetched at connect. Return the entry ids whose bracket still holds a position
        or works an order.
        """
        subs: dict[str, OrderSubmitted] = {}
        accepted: dict[str, OrderAccepted] = {}
        fills: dict[str, list[OrderFilled]] = {}
        ended: set[str] = set()
        for e in events:
            if not isinstance(e, OrderEvent):
                continue
            if isinstance(e, OrderSubmitted):
                subs[e.client_order_id] = e
            elif isinstance(e, OrderAccepted):
                accepted[e.client_order_id] = e
            elif isinstance(e, OrderFilled):
                fills.setdefault(e.client_order_id, []).append(e)
                self._fills.add(e.venue_fill_id)
            else:
                ended.add(e.client_order_id)
        for cid, sub in subs.items():
            self._used.add(cid)
            if cid in self._orders:
                continue
            got, ack = fills.get(cid, []), accepted.get(cid)
            o = _Order(
                cid,
                sub.symbol,
                sub.role,
                sub.side,
                sub.order_type,
                ack.quantity if ack else sub.quantity,
                None,
                parent_id=sub.parent_id,
                limit_price=(ack.limit_price if ack else None) or sub.limit_price,
                stop_price=(ack.stop_price if ack else None) or sub.stop_price,
                filled=sum(f.quantity for f in got),
                accepted=ack is not None,
                announced=True,
            )
            if o.filled:
                o.avg_price = sum(f.fill_price * f.quantity for f in got) / o.filled
            o.done = cid in ended or o.filled >= o.quantity
            self._orders[cid] = o
            self._placed(o, sub.venue_order_id or (ack.venue_order_id if ack else ""))
        for entry in [o for o in self._orders.values() if o.role == "entry" and o.bracket is None]:
            self._rebuild_bracket(entry)
        held = dict(self._positions)  # already the gateway's: the replay must not move them
        self._replay(*self._history)
        self._positions = held
        restored: list[str] = []
        for o in self._orders.values():
            if o.role in ("stop", "target", "entry") and not o.done:
                parent = o.parent_id or o.client_order_id
                if parent in subs and parent not in restored:
                    restored.append(parent)
        return restored

    def _rebuild_bracket(self, entry: _Order) -> None:
        """Give a restored entry its bracket (distances from its children) and child records."""
        stop = self._orders.get(child_order_id(entry.client_order_id, "stop"))
        target = self._orders.get(child_order_id(entry.client_order_id, "target"))
        ref = entry.avg_price or entry.limit_price or 0.0
        inst = self.instruments.get(entry.symbol)
        tick = float(inst.tick_size) if inst is not None else 0.25
        stop_d = abs(ref - stop.stop_price) if stop and stop.stop_price and ref else 4 * tick
        target_d = (
            abs(target.limit_price - ref) if target and target.limit_price and ref else 8 * tick
        )
        b = BracketOrder(
            client_order_id=entry.client_order_id,
            symbol=entry.symbol,
            side=entry.side,
            quantity=entry.quantity,
            stop_distance=max(stop_d, tick),
            target_distance=max(target_d, tick),
            entry_type="limit" if entry.order_type == "limit" else "market",
            limit_price=entry.limit_price if entry.order_type == "limit" else None,
        )
        entry.bracket = b
        exit_side: OrderSide = "sell" if entry.side == "buy" else "buy"
        legs: tuple[tuple[OrderRole, OrderType], ...] = (("stop", "stop"), ("target", "limit"))
        for role, kind in legs:
            cid = b.child_id(role)
            child = self._orders.get(cid)
            if child is None:  # the gateway places it when the entry fills
                child = _Order(
                    cid,
                    entry.symbol,
                    role,
                    exit_side,
                    kind,
                    entry.quantity,
                    b,
                    parent_id=entry.client_order_id,
                    done=entry.done and not entry.filled,
                )
                self._orders[cid] = child
            child.bracket = b
        self._used.add(b.child_id("flatten"))


def _num(text: str) -> int:
    return int(text) if text.isdigit() else 0
