"""Reconciliation over the real paper venue and the order journal: matched, adopted, unexplained."""

from __future__ import annotations

import asyncio
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra.contracts import OrderFilled
from infra.settings import Settings
from trader.core.bar import MarketBar
from trader.core.instruments import instruments_from_settings
from trader.core.risk import RiskLimits, RiskManager
from trader.venues.base import BracketOrder, client_order_id
from trader.venues.journal import JournalError, OrderJournal
from trader.venues.paper import PaperVenue
from trader.venues.reconcile import RECONCILE_HOLD, known_order_ids, reconcile

T0 = int(datetime(2024, 3, 5, 15, 0, tzinfo=UTC).timestamp())  # 10:00 ET, a Tuesday
INSTRUMENTS = instruments_from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
PV = {s: i.point_value_usd for s, i in INSTRUMENTS.items()}
TICKS = {s: i.tick_size for s, i in INSTRUMENTS.items()}


@dataclass(frozen=True)
class Session:
    """The exchange session a bar falls in (what `SessionState` asks of the features)."""

    in_rth: bool = True
    minutes_to_close: int = 300


RTH = Session()


class Trader:
    """The paper venue with the trader's journal listening (unless it is away)."""

    def __init__(self, path: Path) -> None:
        self.venue = PaperVenue(INSTRUMENTS)
        self.journal = OrderJournal(path)
        self.away = False
        self.venue.add_listener(self._listen)
        self.n = 0

    def _listen(self, event: object) -> None:
        if not self.away:
            self.journal.append(event)  # type: ignore[arg-type]

    def bar(self, symbol: str, o: float, h: float, lo: float, c: float) -> None:
        self.n += 1
        self.venue.on_bar(MarketBar(symbol, T0 + 60 * self.n, o, h, lo, c, 100.0), RTH)

    def buy(self, symbol: str, qty: int = 1, stop: float = 4.0, target: float = 8.0) -> str:
        ts = datetime.fromtimestamp(T0 + 60 * self.n, UTC)
        cid = client_order_id(symbol, "S2", ts, "entry")
        self.venue.submit_bracket(
            BracketOrder(cid, symbol, "buy", qty, stop, target, strategy="S2")
        )
        return cid

    def check(self, risk: RiskManager | None = None, symbols: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
        return reconcile(
            self.venue,
            self.journal.ledger(PV),
            known_ids=known_order_ids(self.journal.events),
            tick_sizes=TICKS,
            symbols=symbols,
            holds=risk,
        )


def test_matched_position_with_its_working_bracket(tmp_path: Path) -> None:
    t = Trader(tmp_path / "orders.jsonl")
    t.bar("ES", 5000, 5001, 4999, 5000)
    entry = t.buy("ES", 2)
    t.bar("ES", 5000, 5002, 4999, 5001)  # fills at 5000.25, stop 4996.25, target 5008.25
    risk = RiskManager(RiskLimits())
    rec = t.check(risk, symbols=("ES", "NQ"))
    es, nq = rec.events
    assert (es.symbol, es.status, es.quantity, es.expected_quantity) == ("ES", "matched", 2, 2)
    assert es.avg_price == es.expected_avg_price == 5000.25
    assert es.working_orders == tuple(sorted((f"{entry[:-6]}-stop", f"{entry[:-6]}-target")))
    assert (nq.status, nq.quantity, nq.working_orders) == ("matched", 0, ())
    assert rec.clean and risk.entry_block() is None and rec.elapsed_ms > 0
    assert rec.status()["symbols"]["ES"]["status"] == "matched"


def test_target_filled_while_away_is_adopted(tmp_path: Path) -> None:
    t = Trader(tmp_path / "orders.jsonl")
    t.bar("ES", 5000, 5001, 4999, 5000)
    entry = t.buy("ES")
    t.bar("ES", 5000, 5002, 4999, 5001)
    t.away = True
    t.bar("ES", 5001, 5010, 5000, 5009)  # the target at 5008.25 fills; the stop is cancelled
    assert t.venue.positions() == []
    (es,) = t.check().events
    assert es.status == "adopted" and es.quantity == 0 and es.expected_quantity == 1
    assert f"{entry[:-6]}-" in es.detail and "filled while away" in es.detail


def test_entry_filled_while_away_is_adopted_with_its_bracket(tmp_path: Path) -> None:
    t = Trader(tmp_path / "orders.jsonl")
    t.bar("NQ", 18000, 18001, 17999, 18000)
    entry = t.buy("NQ", 3)
    t.away = True
    t.bar("NQ", 18000, 18002, 17999, 18001)  # fills; the stop and target start working
    risk = RiskManager(RiskLimits())
    (nq,) = t.check(risk).events
    assert nq.status == "adopted" and nq.quantity == 3 and nq.expected_quantity == 0
    assert entry in nq.detail and risk.entry_block() is None


def test_a_position_we_never_ordered_holds_entries_until_it_is_gone(tmp_path: Path) -> None:
    t = Trader(tmp_path / "orders.jsonl")
    t.bar("ES", 5000, 5001, 4999, 5000)
    t.away = True  # someone else's bracket: our journal never sees it
    t.buy("ES")
    t.bar("ES", 5000, 5002, 4999, 5001)
    risk = RiskManager(RiskLimits())
    rec = t.check(risk)
    (es,) = rec.events
    assert es.status == "unexplained" and "never sent" in es.detail
    assert risk.check("ES", 1, 10.0, T0)[1] == RECONCILE_HOLD
    assert "unexplained venue state after start (ES: the venue works orders we never sent" in (
        risk.entry_block() or ""
    )
    t.venue.flatten(reason="operator")  # the operator closes it at the venue
    assert t.check(risk).clean and risk.entry_block() is None


def test_journal_survives_a_reload_cuts_a_torn_tail_and_compacts(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    t = Trader(path)
    t.bar("ES", 5000, 5001, 4999, 5000)
    t.bar("NQ", 18000, 18001, 17999, 18000)
    t.buy("ES")
    t.buy("NQ")
    t.bar("ES", 5000, 5002, 4999, 5001)
    t.bar("NQ", 18000, 18002, 17999, 18001)
    t.bar("NQ", 18001, 18020, 18000, 18015)  # NQ's target fills: NQ is flat again
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    n = len(t.journal.events)
    t.journal.close()
    with open(path, "ab") as fh:
        fh.write(b'{"schema": {"name": "order_fi')  # a crash mid-write
    again = OrderJournal(path)
    assert len(again.events) == n and path.read_bytes().endswith(b"\n")
    fills = [e for e in again.events if isinstance(e, OrderFilled)]
    assert [f.role for f in fills] == ["entry", "entry", "target"]
    dropped = again.compact(PV)
    assert dropped > 0 and {e.symbol for e in again.events} == {"ES"}
    assert [p.symbol for p in OrderJournal(path).ledger(PV).positions()] == ["ES"]
    again.close()
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([lines[0], b"garbage", *lines[1:]]))
    with pytest.raises(JournalError, match="line 2 is not an order event"):
        OrderJournal(path)


def test_the_trading_process_reconciles_again_after_a_reconnect(tmp_path: Path) -> None:
    from infra.contracts import Event, PositionReconciled
    from trader.core.engine import Engine, EngineConfig
    from trader.recovery import Recovery

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    out: list[Event] = []
    engine = Engine(
        settings,
        EngineConfig(symbols=("ES",), source="sim", run_id="rc", record_metrics=False),
        sinks=[lambda _t, e: out.append(e)],
    )
    recovery = Recovery(settings, engine, state_dir=tmp_path)
    assert recovery.start().trigger == "start"
    venue = engine.venue
    venue.on_bar(MarketBar("ES", T0, 5000, 5001, 4999, 5000, 100.0), RTH)
    venue.submit_bracket(BracketOrder("r-entry", "ES", "buy", 1, 4.0, 8.0, strategy="S2"))
    asyncio.run(venue.disconnect())
    recovery.after_bar()
    venue.on_bar(MarketBar("ES", T0 + 60, 5000, 5002, 4999, 5001, 100.0), RTH)  # fills meanwhile
    assert not any(isinstance(e, OrderFilled) for e in out)  # held until the session is back
    recovery.after_bar()
    assert recovery.last is not None and recovery.last.trigger == "start"
    asyncio.run(venue.connect())
    recovery.after_bar()
    rec = recovery.last
    assert rec is not None and rec.trigger == "reconnect" and rec.clean
    (es,) = [e for e in out if isinstance(e, PositionReconciled) and e.quantity]
    assert es.status == "matched" and es.quantity == 1
    assert set(es.working_orders) == {"r-stop", "r-target"}
    assert len(recovery.journal.events) > 0  # type: ignore[union-attr]
    recovery.close()


def test_paper_venue_restores_its_book_from_the_journal(tmp_path: Path) -> None:
    from infra.contracts import OrderExpired
    from trader.venues.base import DuplicateClientOrderId, VenueError

    t = Trader(tmp_path / "orders.jsonl")
    t.bar("ES", 5000, 5001, 4999, 5000)
    t.bar("NQ", 18000, 18001, 17999, 18000)
    t.venue.submit_bracket(BracketOrder("a-entry", "ES", "buy", 2, 4.0, 8.0, strategy="S2"))
    t.venue.submit_bracket(BracketOrder("c-entry", "NQ", "sell", 1, 10.0, 20.0))
    t.bar("ES", 5000, 5002, 4999, 5001)  # a fills at 5000.25: stop 4996.25, target 5008.25
    t.bar("NQ", 18000, 18001, 17995, 17996)  # c fills at 17999.75
    t.bar("NQ", 17996, 17997, 17975, 17978)  # c's target (17979.75) fills: NQ is flat
    t.venue.modify("a-stop", stop_price=4998.0)
    t.venue.submit_bracket(BracketOrder("b-entry", "ES", "sell", 1, 4.0, 8.0))  # never fills
    t.journal.close()

    journal = OrderJournal(tmp_path / "orders.jsonl")
    venue = PaperVenue(INSTRUMENTS)
    seen: list[object] = []
    venue.add_listener(seen.append)
    assert venue.restore(list(journal.events)) == ["a-entry"]
    assert [(type(e).__name__, e.client_order_id, e.reason) for e in seen] == [  # type: ignore[attr-defined]
        ("OrderExpired", "b-entry", "venue restarted")
    ]
    assert isinstance(seen[0], OrderExpired)
    (pos,) = venue.positions()
    assert (pos.symbol, pos.quantity, pos.avg_price) == ("ES", 2, 5000.25)
    orders = {w.client_order_id: w for w in venue.working_orders()}
    assert set(orders) == {"a-stop", "a-target"}
    assert orders["a-stop"].stop_price == 4998.0 and orders["a-target"].limit_price == 5008.25
    with pytest.raises(DuplicateClientOrderId):
        venue.submit_bracket(BracketOrder("a-entry", "ES", "buy", 1, 4.0, 8.0))
    with pytest.raises(VenueError, match="empty book"):
        venue.restore(list(journal.events))
    # the restored stop works: a bar through 4998 exits there, less a tick of slippage
    venue.on_bar(MarketBar("ES", T0 + 600, 5000, 5000, 4990, 4995, 100.0), RTH)
    fills = [e for e in seen if isinstance(e, OrderFilled)]
    assert [(f.client_order_id, f.fill_price) for f in fills] == [("a-stop", 4997.75)]
    assert venue.positions() == [] and venue.working_orders() == []
    journal.close()
