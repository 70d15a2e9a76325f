"""The paper venue's restore after a kill -9 between an exit fill and the OCO cancel.

Found by the soak: the target filled and was journaled, the process died before the
stop's OCO cancel was; the restarted venue restored the bracket as open with its
stop working, and the position was closed a second time.
"""

from __future__ import annotations

from pathlib import Path

from infra.contracts import OrderCancelled, OrderFilled
from tests.trader.venues.test_reconcile import INSTRUMENTS, Trader
from trader.venues.base import BracketOrder
from trader.venues.journal import OrderJournal
from trader.venues.paper import PaperVenue


class _DiesAfterTheTargetFill(Trader):
    """Journals until a target fill is written, then nothing (the process was killed)."""

    def _listen(self, event: object) -> None:
        if not self.away:
            self.journal.append(event)  # type: ignore[arg-type]
        if isinstance(event, OrderFilled) and event.role == "target":
            self.away = True


def test_a_bracket_closed_by_its_target_is_not_restored_and_its_stop_is_cancelled(
    tmp_path: Path,
) -> None:
    t = _DiesAfterTheTargetFill(tmp_path / "orders.jsonl")
    t.bar("ES", 5000, 5001, 4999, 5000)
    t.venue.submit_bracket(BracketOrder("a-entry", "ES", "buy", 1, 4.0, 8.0, strategy="S2"))
    t.bar("ES", 5000, 5002, 4999, 5001)  # fills at 5000.25: target 5008.25
    t.bar("ES", 5001, 5010, 5000, 5009)  # the target fills; the OCO cancel never reaches disk
    t.journal.close()
    journal = OrderJournal(tmp_path / "orders.jsonl")
    names = [(type(e).__name__, e.client_order_id) for e in journal.events]
    assert ("OrderFilled", "a-target") in names and ("OrderCancelled", "a-stop") not in names

    venue = PaperVenue(INSTRUMENTS)
    seen: list[object] = []
    venue.add_listener(seen.append)
    assert venue.restore(list(journal.events)) == []
    assert [(type(e).__name__, e.client_order_id, e.reason) for e in seen] == [  # type: ignore[attr-defined]
        ("OrderCancelled", "a-stop", "oco")
    ]
    assert isinstance(seen[0], OrderCancelled)
    assert venue.positions() == [] and venue.working_orders() == []
    journal.close()
