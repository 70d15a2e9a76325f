"""Reconciliation at start with 100 working orders (50 open brackets: a stop and a target each).

The paper venue fills 50 brackets on ES and NQ (25 each) with the trader's order
journal listening, so the venue works 100 orders (50 stops, 50 targets) and holds
two net positions. Each sample is what a restarted trader does before it trades:
open the journal from disk (decode every event), rebuild the ledger, restore a fresh
paper venue's book from the same events, and reconcile it against the ledger. The
comparison alone (`reconcile()` on a rebuilt ledger) is timed too. Every sample
must come out `matched` on both symbols, or the benchmark fails.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BRACKETS = 50
T0 = int(datetime(2024, 3, 5, 15, 0, tzinfo=UTC).timestamp())  # 10:00 ET, a Tuesday


class Session:
    """The exchange session a bar falls in (what `SessionState` asks of the features)."""

    in_rth = True
    minutes_to_close = 300


RTH = Session()


def _journal(path: Path, instruments: dict[str, Any]) -> tuple[Any, int]:
    """Write a journal of 50 filled brackets; return the live venue and the event count."""
    from trader.core.bar import MarketBar
    from trader.venues.base import BracketOrder
    from trader.venues.journal import OrderJournal
    from trader.venues.paper import PaperVenue

    venue = PaperVenue(instruments)
    journal = OrderJournal(path)
    venue.add_listener(journal.append)  # type: ignore[arg-type]
    prices = {"ES": 5000.0, "NQ": 18000.0}
    for s, p in prices.items():
        venue.on_bar(MarketBar(s, T0, p, p + 1, p - 1, p, 100.0), RTH)
    for i in range(BRACKETS):
        symbol = "ES" if i % 2 == 0 else "NQ"
        venue.submit_bracket(
            BracketOrder(f"b{i:03d}-entry", symbol, "buy", 1, 40.0 + i, 80.0 + i, strategy="S2")
        )
    for s, p in prices.items():
        venue.on_bar(MarketBar(s, T0 + 60, p, p + 2, p - 1, p + 1, 100.0), RTH)
    assert len(venue.working_orders()) == 2 * BRACKETS, len(venue.working_orders())
    n = len(journal.events)
    journal.close()
    return venue, n


def run(quick: bool = False) -> dict[str, Any]:
    """Time start-up reconciliation with 100 working orders; return p50/p99."""
    from bench.harness import summarize
    from infra.settings import Settings
    from trader.core.instruments import instruments_from_settings
    from trader.venues.journal import OrderJournal
    from trader.venues.paper import PaperVenue
    from trader.venues.reconcile import known_order_ids, reconcile

    instruments = instruments_from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    pv = {s: i.point_value_usd for s, i in instruments.items()}
    ticks = {s: i.tick_size for s, i in instruments.items()}
    reps = 20 if quick else 300
    start_ms: list[float] = []
    compare_ms: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "orders.jsonl"
        venue, n_events = _journal(path, instruments)
        for _ in range(reps):
            t0 = time.perf_counter()
            journal = OrderJournal(path)
            ledger = journal.ledger(pv)
            fresh = PaperVenue(instruments)  # a restarted process: the book comes from the journal
            fresh.restore(list(journal.events))
            known = known_order_ids(journal.events)
            rec = reconcile(fresh, ledger, known_ids=known, tick_sizes=ticks)
            start_ms.append((time.perf_counter() - t0) * 1e3)
            journal.close()
            if [e.status for e in rec.events] != ["matched", "matched"]:
                raise AssertionError(f"not matched: {rec.status()}")
            if len(fresh.working_orders()) != 2 * BRACKETS:
                raise AssertionError(f"{len(fresh.working_orders())} working orders restored")
            t1 = time.perf_counter()
            reconcile(venue, ledger, known_ids=known, tick_sizes=ticks)
            compare_ms.append((time.perf_counter() - t1) * 1e3)
    return {
        "workload": (
            f"{BRACKETS} open paper brackets on ES/NQ = {2 * BRACKETS} working orders, "
            f"journal of {n_events} order events, {reps} restarts"
        ),
        "metrics": {
            "start_reconcile": summarize(
                start_ms,
                "ms",
                label="journal load + ledger + paper book restore + reconcile, 100 working orders",
            ),
            "compare_only": summarize(compare_ms, "ms", label="reconcile() alone"),
        },
        "targets": {"start_reconcile": {"stat": "p99", "op": "<", "value": 250.0}},
    }
