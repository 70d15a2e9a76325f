"""The trader's per (symbol, strategy) statistics: the layout /verify/today and backtests show."""

from __future__ import annotations

import math

from trader.core.stats import TradeStats


def test_the_trader_summary_keeps_its_fields_and_skips_a_bad_trade() -> None:
    stats = TradeStats()
    pnl = [100.0, -50.0, -80.0, 200.0, -20.0]
    r = [1.0, -0.5, -0.8, 2.0, -0.2]
    for p, x in zip(pnl, r, strict=True):
        stats.signal("ES", "S2", True)
        stats.outcome("ES", "S2", p, x, False)
    stats.signal("ES", "S3", False)
    stats.outcome("ES", "S3", -30.0, -0.6, True)
    stats.outcome("ES", "S2", math.nan, 1.0, False)  # logged and left out
    out = stats.summary()
    assert list(out["ES"]) == ["S2", "S3", "ALL"]
    s2 = out["ES"]["S2"]
    assert s2 == {
        "signals": 5,
        "taken": 5,
        "trades": 5,
        "win_rate": 0.4,
        "avg_r": 0.3,
        "pnl_usd": 150.0,
        "sharpe": round(30.0 / math.sqrt(54800.0 / 4), 4),
        "max_drawdown_usd": 130.0,
        "counterfactual_trades": 0,
        "counterfactual_avg_r": None,
    }
    total = out["ES"]["ALL"]
    assert total["signals"] == 6 and total["taken"] == 5 and total["trades"] == 5
    assert total["counterfactual_trades"] == 1 and total["counterfactual_avg_r"] == -0.6
    assert out["ES"]["S3"]["trades"] == 0 and out["ES"]["S3"]["win_rate"] is None
