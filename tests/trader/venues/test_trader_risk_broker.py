"""Paper broker fills and exits; risk limits."""

from __future__ import annotations

import pytest

from trader.core.bar import MarketBar
from trader.core.instruments import BUILTIN
from trader.core.risk import RiskLimits, RiskManager
from trader.venues.fills import PaperBroker, Position

T0 = 1_709_650_860  # 2024-03-05 15:01 UTC = 10:01 ET


def _bar(i: int, o: float, h: float, lo: float, c: float, symbol: str = "ES") -> MarketBar:
    return MarketBar(symbol, T0 + 60 * i, o, h, lo, c, 100.0)


def _broker(**kw: object) -> PaperBroker:
    return PaperBroker(
        {"ES": BUILTIN["ES"], "NQ": BUILTIN["NQ"]},
        slippage_ticks=1,
        commission_per_contract_usd=2.0,
        **kw,
    )  # type: ignore[arg-type]


def _long(qty: int = 2, stop: float = 4.0, target: float = 8.0, cf: bool = False) -> Position:
    return Position(object(), "ES", "S2", 1, qty, stop, target, counterfactual=cf)


def test_fill_at_next_open_plus_slippage_then_target() -> None:
    b = _broker()
    b.place(_long())
    assert b.on_bar(_bar(0, 5000, 5003, 4998, 5002), 601, True) == []
    p = b.open["ES"][0]
    assert p.entry_price == 5000.25 and p.stop == 4996.25 and p.target == 5008.25
    (closed,) = b.on_bar(_bar(1, 5002, 5009, 5001, 5008), 602, True)
    assert closed.exit_reason == "target" and closed.exit_price == 5008.25
    # 8 points x $50 x 2 contracts - 2 sides x $2 x 2 contracts
    assert closed.pnl_usd == pytest.approx(8 * 50 * 2 - 8.0)
    assert closed.r_multiple == pytest.approx(closed.pnl_usd / (4 * 50 * 2))
    assert closed.mfe_r == pytest.approx(2.0) and closed.mae_r == pytest.approx(2.25 / 4)


def test_stop_wins_when_both_are_touched_in_one_bar() -> None:
    b = _broker()
    b.place(_long())
    b.on_bar(_bar(0, 5000, 5000.5, 4999.5, 5000), 601, True)
    (closed,) = b.on_bar(_bar(1, 5000, 5010, 4990, 5000), 602, True)
    assert closed.exit_reason == "stop"
    assert closed.exit_price == pytest.approx(4996.25 - 0.25)
    assert closed.r_multiple < -1.0
    assert closed.mae_r == pytest.approx(1.0)


def test_gap_through_the_stop_exits_at_the_open() -> None:
    b = _broker()
    b.place(_long(qty=1))
    b.on_bar(_bar(0, 5000, 5000.5, 4999.5, 5000), 601, True)
    (closed,) = b.on_bar(_bar(1, 4990, 4991, 4989, 4990), 602, True)
    assert closed.exit_reason == "stop" and closed.exit_price == 4989.75


def test_short_side_and_session_end_flatten() -> None:
    b = _broker()
    b.place(Position(object(), "NQ", "S6", -1, 1, 10.0, 20.0, counterfactual=True))
    b.on_bar(_bar(0, 18000, 18001, 17999, 18000, "NQ"), 2, True)  # 2 min to close
    p = b.open["NQ"][0]
    assert p.entry_price == 17999.75 and p.stop == 18009.75 and p.target == 17979.75
    (closed,) = b.on_bar(_bar(1, 17998, 18000, 17995, 17996, "NQ"), 0, True)
    assert closed.exit_reason == "session_end"
    assert closed.exit_price == 17996.25
    assert closed.pnl_usd == pytest.approx((17999.75 - 17996.25) * 20 - 4.0)
    assert closed.position.counterfactual


def test_missing_session_end_bar_flattens_at_next_open_and_timeout() -> None:
    b = _broker(max_hold_bars=3)
    b.place(_long(qty=1, stop=50, target=50))
    b.on_bar(_bar(0, 5000, 5001, 4999, 5000), 950, True)
    (closed,) = b.on_bar(_bar(20, 5003, 5004, 5002, 5003), 970, False)
    assert closed.exit_reason == "session_end" and closed.exit_price == 5002.75
    b2 = _broker(max_hold_bars=3, flatten=False)
    b2.place(_long(qty=1, stop=50, target=50))
    results = [b2.on_bar(_bar(i, 5000, 5001, 4999, 5000), 600 + i, True) for i in range(4)]
    assert [len(r) for r in results] == [0, 0, 1, 0]
    assert results[2][0].exit_reason == "timeout"


def test_close_all_exits_open_and_returns_unfilled() -> None:
    b = _broker()
    b.place(_long())
    bar = _bar(0, 5000, 5001, 4999, 5000)
    b.on_bar(bar, 601, True)
    b.place(_long())
    closed, unfilled = b.close_all({"ES": bar})
    assert [c.exit_reason for c in closed] == ["shutdown"] and len(unfilled) == 1
    assert b.positions() == []


def _risk(**kw: object) -> RiskManager:
    limits = RiskLimits(
        **{
            "max_contracts_per_symbol": 4,
            "max_open_positions": 2,
            "max_daily_loss_usd": 1000.0,
            "loss_streak_cooldown": 2,
            "cooldown_bars": 10,
            "commission_per_contract_usd": 2.0,
            **kw,
        }
    )  # type: ignore[arg-type]
    rm = RiskManager(limits)
    rm.new_bar(100)
    return rm


def test_risk_caps_size_positions_and_budget() -> None:
    rm = _risk()
    assert rm.check("ES", 9, 100.0, T0) == (4, "taken")
    assert rm.check("ES", 0, 100.0, T0) == (0, "size_zero")
    assert rm.check("ES", 3, 600.0, T0) == (1, "taken")  # 2 x (600 + 4) > 1000
    assert rm.check("ES", 3, 1200.0, T0) == (0, "risk_budget")
    rm.opened("ES")
    assert rm.check("ES", 1, 100.0, T0) == (0, "position_open")
    rm.opened("NQ")
    assert rm.check("YM", 1, 100.0, T0) == (0, "max_open_positions")
    rm.cancelled("NQ")
    assert rm.check("NQ", 1, 100.0, T0)[1] == "taken"


def test_daily_loss_halts_until_next_day_and_streak_cools_down() -> None:
    rm = _risk(loss_streak_cooldown=5)
    rm.opened("ES")
    rm.closed("ES", -1000.0, T0, 60)
    assert rm.halted and rm.check("ES", 1, 10.0, T0 + 60) == (0, "daily_loss_halt")
    rm.new_bar(101)
    assert not rm.halted and rm.check("ES", 1, 10.0, T0 + 60)[1] == "taken"
    rm2 = _risk()
    for _ in range(2):
        rm2.opened("ES")
        rm2.closed("ES", -10.0, T0, 60)
    assert rm2.check("ES", 1, 10.0, T0 + 9 * 60) == (0, "cooldown")
    assert rm2.check("ES", 1, 10.0, T0 + 10 * 60)[1] == "taken"
    assert rm2.rejections == {"cooldown": 1}


def test_instruments_from_settings() -> None:
    from infra.settings import Settings
    from trader.core.instruments import InstrumentError, instruments_from_settings, require

    s = Settings(
        _env_file=None, INSTRUMENTS_JSON='{"mes": {"tick_size": 0.25, "point_value_usd": 5}}'
    )  # type: ignore[call-arg]
    inst = instruments_from_settings(s)
    assert inst["ES"].tick_value_usd == 12.5 and inst["NQ"].tick_value_usd == 5.0
    assert inst["MES"].point_value_usd == 5.0 and inst["MES"].round_price(5000.13) == 5000.25
    require(inst, ["ES", "MES"])
    with pytest.raises(InstrumentError, match="YM"):
        require(inst, ["YM"])
    with pytest.raises(InstrumentError, match="point_value_usd"):
        instruments_from_settings(
            Settings(_env_file=None, INSTRUMENTS_JSON='{"X": {"tick_size": 1}}')
        )  # type: ignore[call-arg]


def _reference_exit(
    side: int,
    stop_d: float,
    target_d: float,
    bars: list[tuple[float, float, float, float]],
    session_end_at: int,
    max_hold: int,
    slip: float,
) -> tuple[int, float, str, float, float]:
    """The fill model's rules, one position at a time: (bar, price, reason, mae, mfe points)."""
    entry = bars[0][0] + side * slip
    stop, target = entry - side * stop_d, entry + side * target_d
    mae = mfe = 0.0
    for i, (o, h, lo, c) in enumerate(bars):
        adverse, favourable = (
            ((entry - lo), (h - entry)) if side > 0 else ((h - entry), (entry - lo))
        )
        stop_hit = lo <= stop if side > 0 else h >= stop
        target_hit = h >= target if side > 0 else lo <= target
        if i and (o <= stop if side > 0 else o >= stop):
            return i, o - side * slip, "stop", mae, mfe
        if i and (o >= target if side > 0 else o <= target):
            return i, o, "target", mae, max(mfe, (o - entry) * side)
        if stop_hit:
            return (
                i,
                stop - side * slip,
                "stop",
                max(mae, stop_d),
                (mfe if target_hit else max(mfe, favourable)),
            )
        if target_hit:
            return i, target, "target", max(mae, adverse), max(mfe, target_d)
        mae, mfe = max(mae, adverse), max(mfe, favourable)
        if i == session_end_at:
            return i, c - side * slip, "session_end", mae, mfe
        if i + 1 >= max_hold:
            return i, c - side * slip, "timeout", mae, mfe
    return -1, 0.0, "open", mae, mfe


def test_exits_over_random_bars_follow_the_rules_bar_by_bar() -> None:
    """Random walks, brackets on the tick grid (exact touches), opens outside the range."""
    import random

    rng = random.Random(7)
    slip = 0.25
    for _ in range(400):
        side = rng.choice((1, -1))
        stop_d, target_d = rng.randint(2, 16) * 0.25, rng.randint(2, 24) * 0.25
        price, bars = 5000.0, []
        for _ in range(50):
            o = price + rng.randint(-4, 4) * 0.25
            h, lo = o + rng.randint(0, 6) * 0.25, o - rng.randint(0, 6) * 0.25
            c = rng.uniform(lo, h)
            if rng.random() < 0.05:  # a malformed bar: its open outside its own range
                o = h + 0.5 if rng.random() < 0.5 else lo - 0.5
            bars.append((o, h, lo, c))
            price = c
        session_end_at = rng.choice((-1, rng.randint(0, 49)))
        max_hold = rng.randint(3, 60)
        b = _broker(max_hold_bars=max_hold)
        b.place(Position(object(), "ES", "S2", side, 1, stop_d, target_d, counterfactual=True))
        want = _reference_exit(side, stop_d, target_d, bars, session_end_at, max_hold, slip)
        got: tuple[int, float, str, float, float] = (-1, 0.0, "open", 0.0, 0.0)
        for i, (o, h, lo, c) in enumerate(bars):
            minutes = 0 if i == session_end_at else 30
            closed = b.on_bar(_bar(i, o, h, lo, c), minutes, True)
            if closed:
                (x,) = closed
                got = (i, x.exit_price, x.exit_reason, x.mae_r * stop_d, x.mfe_r * stop_d)
                break
        assert got[:3] == want[:3], (side, stop_d, target_d, bars[: got[0] + 2])
        assert got[3:] == pytest.approx(want[3:], abs=1e-9)
