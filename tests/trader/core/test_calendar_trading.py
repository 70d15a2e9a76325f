"""The trader on the exchange calendar: no entries on holidays, flat at early closes, contracts."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from features.calendar import EASTERN, ENTRY_CUTOFF_MIN, calendar
from infra.contracts import Bar, Event, SignalSnapshot, TradeOutcome
from infra.settings import Settings
from trader.cli import backtest
from trader.core.bar import MarketBar
from trader.core.engine import Engine, EngineConfig
from trader.feeds.sim import SimFeed

XMAS = date(2024, 12, 25)


def _et(day: date, hh: int, mm: int) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=EASTERN).astimezone(UTC)


def _run(bars: list[MarketBar], **config: object) -> list[Event]:
    events: list[Event] = []
    engine = Engine(
        Settings(_env_file=None),  # type: ignore[call-arg]
        EngineConfig(source="sim", record_metrics=False, **config),  # type: ignore[arg-type]
        sinks=[lambda topic, ev: events.append(ev)],
    )
    engine.run(bars)
    engine.finish()
    return events


@pytest.fixture(scope="module")
def christmas_bars() -> list[MarketBar]:
    """Sim bars of ES and NQ from 2024-12-16 through 2024-12-27 (the calendar's sessions)."""
    return list(SimFeed(("ES", "NQ"), seed=24, start=date(2024, 12, 16), days=9))


@pytest.fixture(scope="module")
def christmas_events(christmas_bars: list[MarketBar]) -> list[Event]:
    return _run(christmas_bars, max_hold_bars=100_000)


def test_the_sim_feed_has_no_bars_while_the_exchange_is_closed(
    christmas_bars: list[MarketBar],
) -> None:
    cal = calendar()
    days = {cal.session_at(b.ts_s).day for b in christmas_bars}
    assert XMAS not in days and {date(2024, 12, 24), date(2024, 12, 26)} <= days
    halt, reopen = _et(date(2024, 12, 24), 13, 15), _et(XMAS, 18, 0)
    assert not [b for b in christmas_bars if halt.timestamp() < b.ts_s <= reopen.timestamp()]
    assert max(b.ts_s for b in christmas_bars if b.ts_s <= halt.timestamp()) == halt.timestamp()


def test_a_backtest_through_christmas_enters_nothing_on_the_25th(
    christmas_events: list[Event],
) -> None:
    outcomes = [e for e in christmas_events if isinstance(e, TradeOutcome)]
    signals = [e for e in christmas_events if isinstance(e, SignalSnapshot)]
    real = [o for o in outcomes if not o.counterfactual]
    assert len(real) >= 5  # the strategies do trade on the open days around it
    assert not [o for o in outcomes if o.entry_ts.astimezone(EASTERN).date() == XMAS]
    assert not [s for s in signals if s.ts_event.astimezone(EASTERN).date() == XMAS]
    # every signal came from a bar inside regular hours, before the entry cutoff
    cal = calendar()
    for s in signals:
        ts = int(s.ts_event.timestamp())
        day = cal.session_at(ts)
        assert day.rth_open_s < ts <= day.rth_close_s - ENTRY_CUTOFF_MIN * 60, s.ts_event


def test_positions_are_flat_at_the_1300_early_close_on_christmas_eve(
    christmas_events: list[Event],
) -> None:
    eve = date(2024, 12, 24)
    close = _et(eve, 13, 0)
    entered = [
        o
        for o in christmas_events
        if isinstance(o, TradeOutcome) and o.entry_ts.astimezone(EASTERN).date() == eve
    ]
    assert entered and all(o.exit_ts <= close for o in entered)
    flattened = [o for o in entered if o.exit_reason == "session_end"]
    assert flattened and all(o.exit_ts == close for o in flattened)
    signals = [
        s
        for s in christmas_events
        if isinstance(s, SignalSnapshot) and s.ts_event.astimezone(EASTERN).date() == eve
    ]
    assert signals and max(s.ts_event for s in signals) <= _et(eve, 12, 55)


def test_the_engine_refuses_entries_on_holiday_bars_a_feed_invents(
    christmas_bars: list[MarketBar],
) -> None:
    """The 26th's bars trade; the same bars moved onto the closed 25th never do."""
    cal = calendar()
    day26 = [b for b in christmas_bars if b.symbol == "ES" and cal.session_at(b.ts_s).day.day == 26]
    events = _run(day26, symbols=("ES",))
    assert any(isinstance(e, SignalSnapshot) for e in events)
    moved = [
        MarketBar(b.symbol, b.ts_s - 86400, b.open, b.high, b.low, b.close, b.volume) for b in day26
    ]
    assert {cal.session_at(b.ts_s).day for b in moved} == {XMAS}
    assert _run(moved, symbols=("ES",)) == []


def test_emitted_bars_carry_the_front_contract_across_a_roll() -> None:
    bars = list(SimFeed(("ES",), seed=4, start=date(2024, 12, 11), days=2))
    events = _run(bars, symbols=("ES",), emit_bars=True)
    contracts = [(e.ts_event, e.contract) for e in events if isinstance(e, Bar)]
    assert len(contracts) == len(bars)
    roll_open = _et(date(2024, 12, 11), 18, 0)  # Thursday's session: the roll day
    assert {c for t, c in contracts if t <= roll_open} == {"ESZ4"}
    assert {c for t, c in contracts if t > roll_open} == {"ESH5"}


def test_a_csv_backtest_with_bars_on_christmas_day_trades_around_it_not_on_it(
    christmas_bars: list[MarketBar], tmp_path: Path
) -> None:
    """A vendor file that (wrongly) has bars on the 25th: `tradeloop backtest` enters none there."""
    cal = calendar()
    es = [b for b in christmas_bars if b.symbol == "ES"]
    invented = [
        MarketBar("ES", b.ts_s - 86400, b.open, b.high, b.low, b.close, b.volume)
        for b in es
        if cal.session_at(b.ts_s).day.day == 26 and b.ts_s - 86400 > _et(XMAS, 0, 0).timestamp()
    ]
    rows = sorted([*es, *invented], key=lambda b: b.ts_s)
    path = tmp_path / "es.csv"
    with path.open("w") as fh:
        fh.write("timestamp,open,high,low,close,volume\n")
        for b in rows:
            fh.write(f"{b.ts_s},{b.open},{b.high},{b.low},{b.close},{b.volume}\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        backtest,
        [
            *("--data", str(path), "--symbol", "ES", "--symbols", "ES", "--out", str(out)),
            *("--no-progress", "--no-plot"),
        ],
    )
    assert result.exit_code == 0, result.output
    trades = pd.read_parquet(out / "trades.parquet")
    entry_days = trades["entry_ts"].dt.tz_convert(EASTERN).dt.date
    assert len(trades) >= 3 and XMAS not in set(entry_days)
    eve = trades[entry_days == date(2024, 12, 24)]
    assert (eve["exit_ts"] <= pd.Timestamp(_et(date(2024, 12, 24), 13, 0))).all()
