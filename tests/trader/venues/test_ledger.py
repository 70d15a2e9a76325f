"""Order events fold into positions and realised PnL; a backtest's `orders` replay exactly."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from infra.contracts import (
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderSubmitted,
    SignalSnapshot,
    TradeOutcome,
    decode,
)
from infra.lake import iter_payloads, read_topic
from infra.settings import Settings
from trader.backtest import TradeRecorder
from trader.core.engine import Engine, EngineConfig
from trader.feeds.sim import SimFeed
from trader.io.events_out import LakeSink
from trader.venues.base import Position
from trader.venues.ledger import LedgerError, rebuild

T0 = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)
PV = {"ES": 50.0, "NQ": 20.0}


def _fill(cid: str, side: str, qty: int, price: float, commission: float, **kw: Any) -> OrderFilled:
    return OrderFilled(
        ts_event=T0,
        venue="paper",
        symbol=kw.pop("symbol", "ES"),
        client_order_id=cid,
        role=kw.pop("role", "entry"),
        side=side,  # type: ignore[arg-type]
        fill_price=price,
        quantity=qty,
        cumulative_quantity=kw.pop("cum", qty),
        leaves_quantity=kw.pop("leaves", 0),
        commission_usd=commission,
        venue_fill_id=f"{cid}-{kw.pop('n', 1)}",
    )


def test_partial_fills_average_then_close_and_reverse() -> None:
    events: list[Event] = [
        OrderSubmitted(
            ts_event=T0,
            venue="paper",
            symbol="ES",
            client_order_id="a",
            role="entry",
            side="buy",
            quantity=3,
            order_type="market",
        ),
        OrderAccepted(ts_event=T0, venue="paper", symbol="ES", client_order_id="a", quantity=3),
        _fill("a", "buy", 1, 100.0, 1.0, cum=1, leaves=2, n=1),
        _fill("a", "buy", 2, 103.0, 2.0, cum=3, leaves=0, n=2),
    ]
    ledger = rebuild(events, PV)
    assert ledger.positions() == [Position("ES", 3, 102.0)]
    assert ledger.working == {} and ledger.realized_pnl_usd == {}
    # sell 4: closes 3 at 106 (+4 points x 3 x $50, less 3.0 entry and 3/4 of 4.0 exit
    # commission), and opens a short of 1 at 106 carrying the last 1.0 of commission
    pnl = ledger.apply(_fill("b", "sell", 4, 106.0, 4.0, role="flatten"))
    assert pnl == pytest.approx(4 * 3 * 50.0 - 3.0 - 3.0)
    assert ledger.positions() == [Position("ES", -1, 106.0)]
    pnl = ledger.apply(_fill("c", "buy", 1, 104.0, 1.0, role="stop"))
    assert pnl == pytest.approx(2 * 50.0 - 1.0 - 1.0)
    assert ledger.positions() == [] and ledger.commission_usd["ES"] == pytest.approx(8.0)
    assert ledger.total_realized_pnl_usd() == pytest.approx(594.0 + 98.0)


def test_working_orders_follow_acceptance_and_cancellation() -> None:
    sub = OrderSubmitted(
        ts_event=T0,
        venue="paper",
        symbol="NQ",
        client_order_id="s",
        role="stop",
        side="sell",
        quantity=1,
        order_type="stop",
        stop_price=17990.0,
        parent_id="e",
    )
    ledger = rebuild([sub], PV)
    assert ledger.working["s"].stop_price == 17990.0 and ledger.working["s"].parent_id == "e"
    ledger.apply(
        OrderAccepted(
            ts_event=T0,
            venue="paper",
            symbol="NQ",
            client_order_id="s",
            venue_order_id="v9",
            quantity=1,
            stop_price=17995.0,
        )
    )
    assert ledger.working["s"].stop_price == 17995.0 and ledger.working["s"].venue_order_id == "v9"
    ledger.apply(OrderCancelled(ts_event=T0, venue="paper", symbol="NQ", client_order_id="s"))
    assert ledger.working == {}


def test_a_fill_of_an_unknown_instrument_is_a_typed_error() -> None:
    with pytest.raises(LedgerError, match="YM"):
        rebuild([_fill("x", "buy", 1, 40000.0, 1.0, symbol="YM")], PV)


@pytest.mark.parametrize("flatten", [True, False])
def test_a_backtests_orders_in_the_lake_rebuild_its_positions_and_pnl(
    tmp_path: Path, flatten: bool
) -> None:
    settings = Settings(_env_file=None, FLATTEN_AT_SESSION_END=flatten)  # type: ignore[call-arg]
    recorder = TradeRecorder()
    lake = LakeSink(str(tmp_path / "lake"), settings, flush_rows=2000)
    engine = Engine(
        settings,
        EngineConfig(symbols=("ES", "NQ"), source="sim", run_id="ledger", record_metrics=False),
        sinks=[recorder, lake],
    )
    engine.run(SimFeed(("ES", "NQ"), seed=5, days=6))
    engine.finish()
    lake.flush()

    orders: list[Event] = [
        decode(raw) for _, _, raw in iter_payloads(str(tmp_path / "lake"), "orders")
    ]
    ledger = rebuild(orders, PV)
    assert len(recorder.trades) > 20
    assert ledger.positions() == [] and ledger.working == {}
    assert ledger.realized_pnl_usd == {s: v for s, v in engine.realized_pnl_usd.items() if v}
    for symbol in ("ES", "NQ"):
        total = 0.0
        for t in recorder.trades:
            if t.symbol == symbol:
                total += t.pnl_usd
        assert ledger.realized_pnl_usd.get(symbol, 0.0) == total  # exactly, in close order
    # each real outcome names the orders that opened and closed it, sent on its signal's bar
    fills = {e.client_order_id: e for e in orders if isinstance(e, OrderFilled)}
    sent = {e.client_order_id: e for e in orders if isinstance(e, OrderSubmitted)}
    signals = {
        s.event_id: s
        for _, _, raw in iter_payloads(str(tmp_path / "lake"), "signals")
        for s in [decode(raw, SignalSnapshot)]
    }
    for t in recorder.trades:
        assert isinstance(t, TradeOutcome)
        assert fills[t.entry_order_id].fill_price == t.entry_price
        assert fills[t.entry_order_id].ts_event == t.entry_ts
        assert fills[t.exit_order_id].fill_price == t.exit_price
        assert fills[t.exit_order_id].ts_event == t.exit_ts
        assert fills[t.exit_order_id].role in ("stop", "target", "flatten")
        assert sent[t.entry_order_id].ts_event == signals[t.signal_id].ts_event
        assert sent[t.entry_order_id].signal_id == t.signal_id
    # the lake's typed columns carry the order facts
    table = read_topic(str(tmp_path / "lake"), "orders")
    assert table.num_rows == len(orders)
    kinds = set(table.column("kind").to_pylist())
    assert {"order_submitted", "order_accepted", "order_filled", "order_cancelled"} <= kinds
    filled = table.filter(pc.equal(table.column("kind"), "order_filled"))
    assert filled.column("fill_price").null_count == 0
    assert set(table.column("run_id").to_pylist()) == {"ledger"}
