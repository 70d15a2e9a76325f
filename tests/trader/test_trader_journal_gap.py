"""A trader killed between spooling an order event and journaling it.

The engine's venue listener spools each order event to the outbox before the order
journal takes it. Killed between the two (`trader.order_spooled_before_journal`, at
the entry's fill, before its stop and target exist), the next process must journal
the spooled event, restore the position the simulated exchange holds, flatten it
(its stop was never placed) and reconcile clean: the order events on their way to
Kafka and the journal tell the same story.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from infra.contracts import OrderEvent, OrderFilled, OrderSubmitted, decode
from infra.crash import CRASH_ENV, CRASH_EXIT_CODE, CrashPoint
from tests.kit.bars import write_bars_csv
from trader.feeds.sim import SimFeed
from trader.io.outbox import Outbox
from trader.venues.journal import OrderJournal
from trader.venues.ledger import rebuild

TRADELOOP = str(Path(sys.executable).with_name("tradeloop"))
DAY = 23 * 60
RTH_10AM = 16 * 60  # bars from the Globex open (18:00 ET) to 10:00 ET


def _trade(home: Path, csv: Path, run_id: str, **extra: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TRADELOOP_"))}
    env.update(TRADELOOP_HOME=str(home), **extra)
    cmd = [TRADELOOP, "trade", "--feed", f"csv:{csv}", "--symbols", "ES", "--speed", "0",
           "--no-api", "--run-id", run_id, "--drain-timeout", "0.5"]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=home.parent, capture_output=True, timeout=180)
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


def test_an_order_event_spooled_but_not_journaled_is_journaled_and_its_position_flattened(
    tmp_path: Path,
) -> None:
    bars = list(SimFeed(("ES",), seed=5, days=2))
    home = tmp_path / "home"
    first = write_bars_csv(tmp_path / "day1.csv", bars[:DAY])
    # the next run starts at 10:00 ET, in regular hours: no session-end flatten on its first bar
    second = write_bars_csv(tmp_path / "day2.csv", bars[DAY + RTH_10AM :])
    # the third order event is the first entry's fill (submitted, accepted, filled)
    plan = f"{CrashPoint.TRADER_ORDER_SPOOLED_BEFORE_JOURNAL.value}:3"
    code, out = _trade(home, first, "gap0", **{CRASH_ENV: plan})
    assert code == CRASH_EXIT_CODE, out[-3000:]
    spool, journal_path = home / "outbox", home / "trader" / "orders.jsonl"
    outbox = Outbox(spool)
    last = outbox.last_record()
    outbox.close()
    assert last is not None and last[0] == "orders"  # the newest record spooled
    fill = decode(last[1])
    assert isinstance(fill, OrderFilled) and fill.role == "entry"
    journal = OrderJournal(journal_path)
    assert fill.event_id not in {e.event_id for e in journal.events}  # the gap, as a kill leaves it
    journal.close()

    code, out = _trade(home, second, "gap1")
    assert code == 0, out[-3000:]
    assert f"lacked the last spooled order event {fill.event_id}" in out
    assert "ES holds a position whose stop was never placed" in out
    assert "reconciliation clean" in out

    outbox = Outbox(spool)
    spooled = [decode(v) for _, topic, _, v in outbox.read(1_000_000) if topic == "orders"]
    outbox.close()
    orders = [e for e in spooled if isinstance(e, OrderEvent)]
    journal = OrderJournal(journal_path)
    journaled = list(journal.events)
    journal.close()
    assert [e.event_id for e in orders] == [e.event_id for e in journaled]
    flattens = [e for e in orders if isinstance(e, OrderSubmitted) and e.role == "flatten"]
    assert flattens[0].reason == "risk_flatten"  # the unprotected position, at the first bar
    assert flattens[0].client_order_id.startswith(fill.client_order_id.removesuffix("entry"))
    points = {"ES": 50.0}
    from_spool, from_journal = rebuild(orders, points), rebuild(journaled, points)
    assert from_spool.positions() == from_journal.positions() == []
    assert from_spool.realized_pnl_usd == from_journal.realized_pnl_usd
