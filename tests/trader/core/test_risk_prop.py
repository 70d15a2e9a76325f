"""TopstepX rules by hand: the trailing Maximum Loss Limit and the Daily Loss Limit."""

from __future__ import annotations

import pytest

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
