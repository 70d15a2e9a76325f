"""TopstepX rules by hand: the trailing Maximum Loss Limit and the Daily Loss Limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.contracts import Event, OrderSubmitted, TradeOutcome
from infra.settings import Settings
from trader.core.engine import Engine, EngineConfig
from trader.core.risk import (
    DAILY_LOSS_LIMIT,
    MAX_LOSS_LIMIT,
    PropAccount,
    PropLimits,
    PropRules,
    RiskLimits,
    RiskManager,
    open_pnl_usd,
)
from trader.feeds.sim import SimFeed
from trader.recovery import Recovery

T0 = 1_700_000_000


def test_max_loss_limit_trails_the_end_of_day_high_and_locks_at_the_start() -> None:
    # Topstep's own example: $50K account, $2,000 Maximum Loss Limit.
    rules = PropRules(PropLimits(50_000.0, max_loss_limit_usd=2_000.0))
    rules.new_day(1)
    assert rules.account.floor_usd == 48_000.0
    rules.realised(+500.0)  # day 1: +500 -> 50,500
    assert rules.account.floor_usd == 48_000.0  # not moved intraday
    rules.new_day(2)
    assert rules.account.floor_usd == 48_500.0 and rules.account.eod_high_usd == 50_500.0
    rules.realised(-500.0)  # day 2: back to 50,000; the floor stays
    rules.new_day(3)
    assert rules.account.floor_usd == 48_500.0
    rules.realised(+2_500.0)  # day 3: 52,500 -> the floor would be 50,500: capped at 50,000
    rules.new_day(4)
    assert rules.account.floor_usd == 50_000.0
    rules.realised(+1_000.0)  # day 4: 53,500; locked at the starting balance for good
    rules.new_day(5)
    assert rules.account.floor_usd == 50_000.0 and rules.account.eod_high_usd == 53_500.0


def test_max_loss_limit_breaks_intraday_with_open_pnl() -> None:
    rules = PropRules(PropLimits(50_000.0, max_loss_limit_usd=2_000.0))
    rules.new_day(1)
    rules.realised(+500.0)
    rules.new_day(2)  # floor 48,500; balance 50,500
    rules.realised(-1_200.0)  # 49,300: 800 above the floor
    assert rules.breach(-799.0) is None
    assert rules.breach(-800.0) == MAX_LOSS_LIMIT  # 48,500 hits the floor
    assert rules.headroom_usd() == pytest.approx(800.0)


def test_an_intraday_high_does_not_move_the_floor() -> None:
    rules = PropRules(PropLimits(50_000.0, max_loss_limit_usd=2_000.0))
    rules.new_day(1)
    rules.realised(+1_500.0)
    rules.realised(-1_400.0)  # high of 51,500 intraday, closes at 50,100
    rules.new_day(2)
    assert rules.account.floor_usd == 48_100.0


def test_daily_loss_limit_counts_realised_and_open_pnl_of_the_day() -> None:
    rules = PropRules(PropLimits(50_000.0, daily_loss_limit_usd=1_000.0))
    rules.new_day(1)
    rules.realised(+300.0)
    rules.new_day(2)  # yesterday's profit does not count today
    rules.realised(-600.0)
    assert rules.day_pnl_usd(-300.0) == -900.0 and rules.breach(-300.0) is None
    assert rules.breach(-400.0) == DAILY_LOSS_LIMIT  # -600 - 400 = -1,000 hits the limit
    assert rules.headroom_usd() == pytest.approx(400.0)
    rules.new_day(3)
    assert rules.breach(-999.0) is None


def test_open_pnl_pays_the_round_turn_commission() -> None:
    # ES long 2 from 5000.00, marked at 4990.00: -10 x 50 x 2 - 2 x 2.25 x 2 = -1,009
    assert open_pnl_usd(1, 2, 5000.0, 4990.0, 50.0, 2.25) == pytest.approx(-1_009.0)
    # NQ short 1 from 18000.00, marked at 17990.00: +10 x 20 - 4.5 = 195.5
    assert open_pnl_usd(-1, 1, 18000.0, 17990.0, 20.0, 2.25) == pytest.approx(195.5)


def _manager(**prop: float) -> RiskManager:
    limits = RiskLimits(
        max_daily_loss_usd=5_000.0,
        commission_per_contract_usd=2.0,
        prop=PropLimits(50_000.0, **prop),
    )
    rm = RiskManager(limits)
    rm.new_bar(100)
    return rm


def test_risk_manager_holds_entries_on_a_daily_breach_until_the_next_day() -> None:
    rm = _manager(daily_loss_limit_usd=1_000.0)
    rm.opened("ES")
    rm.closed("ES", -700.0, T0, 60)
    assert rm.mark("NQ", -299.0) is None
    assert rm.mark("NQ", -300.0) == DAILY_LOSS_LIMIT
    assert rm.mark("NQ", -350.0) is None  # reported once
    assert rm.breaches == [DAILY_LOSS_LIMIT]
    assert rm.check("ES", 1, 10.0, T0) == (0, DAILY_LOSS_LIMIT)
    assert "reached the daily loss limit of 1000.00 USD" in (rm.entry_block() or "")
    rm.mark("NQ", 0.0)
    rm.new_bar(101)
    assert rm.holds == {} and rm.check("ES", 1, 10.0, T0)[1] == "taken"


def test_risk_manager_holds_until_released_on_a_max_loss_breach() -> None:
    rm = _manager(max_loss_limit_usd=2_000.0)
    rm.opened("ES")
    rm.closed("ES", -1_500.0, T0, 60)
    assert rm.mark("ES", -500.0) == MAX_LOSS_LIMIT
    rm.new_bar(101)
    assert rm.check("ES", 1, 10.0, T0) == (0, MAX_LOSS_LIMIT)
    assert "floor of 48000.00 USD" in rm.holds[MAX_LOSS_LIMIT].why


def test_size_is_cut_to_the_prop_headroom() -> None:
    rm = _manager(daily_loss_limit_usd=1_000.0)
    rm.opened("NQ")
    rm.closed("NQ", -600.0, T0, 60)  # 400 left today
    rm.mark("NQ", 0.0)
    # worst case per contract 100 + 2 x 2 = 104: 400 // 104 = 3 contracts
    assert rm.check("ES", 4, 100.0, T0) == (3, "taken")
    rm.mark("YM", -100.0)  # an open loss eats the room: 300 // 104 = 2
    assert rm.check("ES", 4, 100.0, T0) == (2, "taken")


def test_prop_account_round_trips_and_names_a_bad_field() -> None:
    rm = _manager(max_loss_limit_usd=2_000.0)
    saved: list[dict[str, object]] = []
    rm.on_prop_change = lambda acct: saved.append(acct.to_dict())
    rm.closed("ES", 250.0, T0, 60)
    assert saved[-1]["balance_usd"] == 50_250.0
    assert PropAccount.from_dict(saved[-1]) == rm.prop.account  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="missing field 'floor_usd'"):
        PropAccount.from_dict({"balance_usd": 1, "eod_high_usd": 1, "day": 1})
    with pytest.raises(ValueError, match="bad value"):
        PropAccount.from_dict({**saved[-1], "day": "tuesday"})


def test_rules_off_by_default() -> None:
    rm = RiskManager(RiskLimits())
    assert rm.prop is None and rm.mark("ES", -1e9) is None


def _engine_with_recovery(tmp_path: Path, **env: Any) -> tuple[Engine, Recovery, list[Event]]:
    settings = Settings(_env_file=None, **env)  # type: ignore[call-arg]
    out: list[Event] = []
    engine = Engine(
        settings,
        EngineConfig(symbols=("ES",), source="sim", run_id="prop", record_metrics=False),
        sinks=[lambda _t, e: out.append(e)],
    )
    recovery = Recovery(settings, engine, state_dir=tmp_path / "trader")
    recovery.start()
    return engine, recovery, out


def test_a_daily_loss_breach_halts_the_day_and_the_account_survives_a_restart(
    tmp_path: Path,
) -> None:
    engine, recovery, _ = _engine_with_recovery(
        tmp_path, PROP_DAILY_LOSS_LIMIT_USD=800, PROP_MAX_LOSS_LIMIT_USD=3000
    )
    halts: list[tuple[str, int | None]] = []
    lifts = 0
    for bar in SimFeed(("ES",), seed=3, days=3):
        before = recovery.killswitch.state  # type: ignore[union-attr]
        engine.on_bar(bar)  # a new trading day lifts a dated halt here
        recovery.after_bar()
        after = recovery.killswitch.state  # type: ignore[union-attr]
        if after.triggers > before.triggers:
            halts.append((after.by, after.until_trading_day))
            assert engine.risk.prop is not None
            assert engine.risk.prop.day_pnl_usd(engine.risk.open_pnl_total) <= -800.0
        if before.halted and not after.halted:
            lifts += 1
    # each breach halts until the next trading day, and the next day lifts it
    assert halts and all(by == DAILY_LOSS_LIMIT for by, _ in halts)
    days = [until for _, until in halts]
    assert all(d is not None for d in days) and len(set(days)) == len(days)
    assert engine.risk.rejections[DAILY_LOSS_LIMIT] > 0
    # every halt but the last lifted when its next day began; the last waits for a day to come
    assert lifts == len(halts) - 1 and recovery.killswitch.halted  # type: ignore[union-attr]
    saved = tmp_path / "trader" / "prop_account.json"
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    account = engine.risk.prop.account  # type: ignore[union-attr]
    recovery.close()
    again, recovery2, _ = _engine_with_recovery(
        tmp_path, PROP_DAILY_LOSS_LIMIT_USD=800, PROP_MAX_LOSS_LIMIT_USD=3000
    )
    assert again.risk.prop is not None and again.risk.prop.account == account
    assert account.balance_usd < 50_000.0 and account.floor_usd == 47_000.0
    recovery2.close()


def test_a_breach_with_an_open_position_flattens_it_and_engages_the_kill_switch(
    tmp_path: Path,
) -> None:
    engine, recovery, out = _engine_with_recovery(tmp_path, PROP_MAX_LOSS_LIMIT_USD=3000)
    bars = iter(SimFeed(("ES",), seed=3, days=1))
    for bar in bars:  # trade until a position is open
        engine.on_bar(bar)
        recovery.after_bar()
        if engine.venue.positions():
            break
    (position,) = engine.venue.positions()
    assert engine.risk.prop is not None
    # the floor moves up to the balance (as if yesterday closed far higher): any open loss breaks it
    engine.risk.prop.account.floor_usd = engine.risk.prop.account.balance_usd
    engine.on_bar(next(bars))
    recovery.after_bar()
    flat = [e for e in out if isinstance(e, OrderSubmitted) and e.role == "flatten"]
    assert [e.reason for e in flat] == ["risk_flatten"]
    assert engine.venue.positions() == [] and engine.venue.working_orders() == []
    state = recovery.killswitch.state  # type: ignore[union-attr]
    assert state.halted and state.by == MAX_LOSS_LIMIT and state.until_trading_day is None
    assert "reached the maximum loss limit floor" in state.reason
    engine.on_bar(next(bars))  # the exit settles on the next bar
    outcome = [e for e in out if isinstance(e, TradeOutcome) and not e.counterfactual][-1]
    assert outcome.exit_reason == "risk_flatten" and outcome.quantity == abs(position.quantity)
    assert engine.risk.check("ES", 1, 10.0, T0)[1] == MAX_LOSS_LIMIT
    recovery.close()
