"""Contract rolls: front month, roll days, codes, and back-adjusted continuous series."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import numpy as np
import pandas as pd
import pytest

from features.calendar import EASTERN
from features.rolls import (
    ROLL_DAYS_BEFORE_EXPIRY,
    BackAdjustError,
    back_adjust,
    contract_code,
    expiry,
    front_contract,
    front_month,
    roll_schedule,
)
from infra.contracts import Bar, decode, encode
from infra.settings import Settings
from trader.core.bar import MarketBar


def _et(day: date, hh: int, mm: int) -> int:
    return int(datetime.combine(day, time(hh, mm), tzinfo=EASTERN).timestamp())


def test_2024_roll_dates_and_expiries_are_cme_s() -> None:
    rolls = roll_schedule("ES", date(2024, 1, 1), date(2024, 12, 31))
    assert [(r.day, r.old, r.new, r.expiry) for r in rolls] == [
        (date(2024, 3, 7), "ESH4", "ESM4", date(2024, 3, 15)),
        (date(2024, 6, 13), "ESM4", "ESU4", date(2024, 6, 21)),
        (date(2024, 9, 12), "ESU4", "ESZ4", date(2024, 9, 20)),
        (date(2024, 12, 12), "ESZ4", "ESH5", date(2024, 12, 20)),
    ]
    assert all(r.day.weekday() == 3 for r in rolls)  # Thursdays
    assert ROLL_DAYS_BEFORE_EXPIRY == Settings(_env_file=None).roll_days_before_expiry == 8  # type: ignore[call-arg]


def test_expiry_moves_before_a_holiday_third_friday() -> None:
    # 2026-06-19 is Juneteenth (no regular session): the June 2026 contracts expire a day early
    assert expiry(2026, 6) == date(2026, 6, 18)
    assert expiry(2026, 9) == date(2026, 9, 18)


def test_front_contract_switches_at_the_globex_open_of_the_roll_day() -> None:
    before = _et(date(2024, 12, 11), 17, 0)  # Wednesday's close: still the December contract
    after = _et(date(2024, 12, 11), 18, 1)  # Thursday's session has begun
    assert front_contract("ES", before) == "ESZ4"
    assert front_contract("ES", after) == "ESH5"
    assert front_contract("NQ", after) == "NQH5"
    # a later roll: zero days before expiry keeps December until the expiry session
    assert front_contract("ES", after, roll_days=0) == "ESZ4"
    assert front_contract("ES", _et(date(2024, 12, 19), 18, 1), roll_days=0) == "ESH5"
    assert front_month(date(2024, 12, 25)) == (2025, 3)
    assert front_month(date(2025, 3, 12)) == (2025, 3)
    assert front_month(date(2025, 3, 13)) == (2025, 6)
    assert front_contract("EURUSD", after) == ""  # no known cycle
    with pytest.raises(ValueError, match="roll_days"):
        front_contract("ES", after, roll_days=-1)
    with pytest.raises(ValueError, match="quarterly"):
        contract_code("ES", 2024, 5)


def test_bar_events_carry_their_contract() -> None:
    bar = MarketBar("ES", _et(date(2024, 12, 12), 10, 0), 6000.0, 6001.0, 5999.0, 6000.5, 10.0)
    event = bar.to_event("sim")
    assert event.contract == "ESH5"
    assert bar.to_event("sim", roll_days=0).contract == "ESZ4"
    assert decode(encode(event), Bar).contract == "ESH5"
    legacy = Bar(
        ts_event=datetime(2024, 1, 2, 15, tzinfo=UTC),
        symbol="ES",
        open=1.0,
        high=1.0,
        low=1.0,
        close=1.0,
        volume=0.0,
    )
    assert decode(encode(legacy), Bar).contract == ""


def _synthetic(
    gap: float, seed: int = 1, n: int = 400, roll_at: int = 250
) -> tuple[pd.DataFrame, np.ndarray]:
    """A random walk traded as ESZ4 then ESH5, which trades `gap` points higher."""
    rng = np.random.default_rng(seed)
    t0 = _et(date(2024, 12, 11), 9, 30)
    close = 6000.0 + np.cumsum(rng.normal(0, 1.5, n))
    open_ = np.concatenate([[6000.0], close[:-1]])  # each bar opens at the previous close
    contract = np.where(np.arange(n) < roll_at, "ESZ4", "ESH5")
    shift = np.where(contract == "ESH5", gap, 0.0)
    return pd.DataFrame(
        {
            "ts_event": pd.to_datetime(t0 + 60 * np.arange(n), unit="s", utc=True),
            "symbol": "ES",
            "contract": contract,
            "open": open_ + shift,
            "high": np.maximum(open_, close) + 0.5 + shift,
            "low": np.minimum(open_, close) - 0.5 + shift,
            "close": close + shift,
            "volume": 100.0,
        }
    ), close


def test_back_adjustment_removes_a_synthetic_roll_gap() -> None:
    raw, underlying = _synthetic(gap=37.25)
    raw_returns = np.diff(raw["close"].to_numpy())
    assert raw_returns[249] == pytest.approx(underlying[250] - underlying[249] + 37.25)
    adjusted = back_adjust(raw.sample(frac=1.0, random_state=3))  # any input order
    # the last contract's prices are unchanged
    last = adjusted["contract"] == "ESH5"
    for col in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(
            adjusted.loc[last, col], raw.loc[raw["contract"] == "ESH5", col]
        )
    # the earlier contract moved up by the gap; returns across the roll are continuous
    np.testing.assert_allclose(adjusted["adjustment"], np.where(last, 0.0, 37.25))
    np.testing.assert_allclose(np.diff(adjusted["close"]), np.diff(underlying), atol=1e-9)
    assert adjusted["volume"].tolist() == raw["volume"].tolist()


def test_back_adjustment_accumulates_over_rolls_and_symbols() -> None:
    es, es_under = _synthetic(gap=20.0)
    nq, nq_under = _synthetic(gap=-15.0, seed=2)
    nq["symbol"] = "NQ"
    nq["contract"] = nq["contract"].str.replace("ES", "NQ")
    third = es.iloc[-50:].copy()  # a second roll: ESH5 -> ESM5, 10 more points
    es = es.iloc[:-50].copy()
    third["contract"] = "ESM5"
    for col in ("open", "high", "low", "close"):
        third[col] += 10.0
    es_all = pd.concat([es, third])
    adjusted = back_adjust(pd.concat([nq, es_all]))
    a_es = adjusted[adjusted["symbol"] == "ES"]
    assert sorted(set(a_es["adjustment"].round(9))) == [0.0, 10.0, 30.0]
    np.testing.assert_allclose(np.diff(a_es["close"]), np.diff(es_under), atol=1e-9)
    a_nq = adjusted[adjusted["symbol"] == "NQ"]
    np.testing.assert_allclose(np.diff(a_nq["close"]), np.diff(nq_under), atol=1e-9)


def test_back_adjustment_refuses_bars_it_cannot_chain() -> None:
    raw, _ = _synthetic(gap=5.0)
    back = raw.copy()
    back.loc[300, "contract"] = "ESZ4"  # the old contract reappears after the roll
    with pytest.raises(BackAdjustError, match="ESZ4 comes back"):
        back_adjust(back)
    blank = raw.copy()
    blank.loc[10, "contract"] = ""
    with pytest.raises(BackAdjustError, match="without a contract"):
        back_adjust(blank)
    with pytest.raises(BackAdjustError, match="more than one bar"):
        back_adjust(pd.concat([raw, raw.iloc[[5]]]))
    with pytest.raises(BackAdjustError, match="contract"):
        back_adjust(raw.drop(columns=["contract"]))
