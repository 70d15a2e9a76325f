"""The monitor's PnL section: the shared trade statistics per group, bad values counted."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from features.trade_stats import trade_stats
from infra.contracts import TradeOutcome, decode, encode
from streams.monitor_state import MonitorState
from tests.kit.events import outcome

NOW = datetime(2024, 5, 1, 15, 30, tzinfo=UTC)


def test_pnl_rows_equal_the_batch_statistics_and_a_nan_trade_is_an_error() -> None:
    state = MonitorState(day=NOW.date())
    trades = [
        ("ES", "S2", 120.0, 1.2),
        ("ES", "S3", -40.0, -0.4),
        ("NQ", "S2", -75.5, -0.75),
        ("ES", "S2", 0.0, 0.0),
        ("NQ", "S11", 310.25, 2.1),
        ("ES", "S2", -60.0, -0.6),
    ]
    for i, (sym, strat, pnl_usd, r) in enumerate(trades):
        ev = outcome(
            NOW, sym, strat, pnl_usd, r, exit_ts=NOW - timedelta(minutes=i), event_id=f"o{i}"
        )
        state.observe("outcomes", encode(ev), 0)
    # `"NaN"` as a string decodes to a float NaN: the statistics, not the decoder, refuse it
    bad = encode(outcome(NOW, "ES", "S2", 1.5, 1.0, event_id="nan"))
    bad = bad.replace(b'"pnl_usd":1.5', b'"pnl_usd":"NaN"')
    assert math.isnan(decode(bad, TradeOutcome).pnl_usd)
    state.observe("outcomes", bad, 0)
    pnl = state.pnl()
    assert state.decode_errors["outcomes"] == 1

    def expected(rows: list[tuple[str, str, float, float]]) -> dict[str, object]:
        s = trade_stats([t[2] for t in rows], [t[3] for t in rows])
        assert s.win_rate is not None and s.avg_r is not None
        return {
            "trades": s.trades,
            "wins": s.wins,
            "win_rate": pytest.approx(s.win_rate, abs=1e-6),
            "pnl_usd": pytest.approx(s.pnl_usd, abs=0.005),
            "avg_r": pytest.approx(s.avg_r, abs=1e-6),
        }

    for row in pnl["by_symbol_strategy"]:
        key = (row.pop("symbol"), row.pop("strategy"))
        assert row == expected([t for t in trades if t[:2] == key]), key
    assert [(r["symbol"], r["strategy"]) for r in state.pnl()["by_symbol_strategy"]] == sorted(
        {t[:2] for t in trades}
    )
    for sym in ("ES", "NQ"):
        assert pnl["by_symbol"][sym] == expected([t for t in trades if t[0] == sym])
    assert pnl["total"] == expected(trades)
    assert pnl["total"]["trades"] == 6 and pnl["total"]["wins"] == 2

    state.roll_day(NOW.date() + timedelta(days=1))
    assert state.pnl()["total"] == {
        "trades": 0,
        "wins": 0,
        "win_rate": None,
        "pnl_usd": 0.0,
        "avg_r": None,
    }
