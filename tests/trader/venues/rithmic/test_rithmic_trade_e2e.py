"""`tradeloop trade --venue rithmic --feed rithmic` against `tradeloop venues sim rithmic`, outcomes on Kafka.

Two processes over loopback: the simulator plays the sim feed's bars (regular
hours, seed 7) as ticker plant trades and fills orders on them; the trader trades
those bars through async_rithmic (ticker, order and PnL plants, TLS with the
simulator's CA) and spools its order events and outcomes to the real broker.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from infra.bus import KafkaBus
from infra.contracts import OrderFilled, OrderSubmitted, PositionReconciled, TradeOutcome
from infra.settings import settings_env
from tests.conftest import SettingsFactory
from tests.helpers import wait_until
from tests.trader.venues.trade_e2e import TRADELOOP, net_positions, read_events, run_closed

pytestmark = pytest.mark.kafka


def test_trade_on_the_rithmic_simulator_fills_and_records_outcomes(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(kafka=True, SYMBOLS="ES,NQ")
    env = {**settings_env(settings), "TRADELOOP_HOME": str(tmp_path / "home")}
    sim_log = tmp_path / "sim.out"
    sim = subprocess.Popen(
        [*TRADELOOP, "venues", "sim", "rithmic", "--port", "0", "--bar-ms", "25", "--seed", "7"],
        env=env,
        stdout=sim_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:

        def printed() -> dict[str, str] | None:
            assert sim.poll() is None, sim_log.read_text()
            values = dict(
                line.split("=", 1) for line in sim_log.read_text().splitlines() if "=" in line
            )
            return values if "RITHMIC_CA_FILE" in values else None

        rt = wait_until(printed, 60, interval_s=0.1, what="the simulator's settings")
        assert rt is not None and rt["VENUE"] == "rithmic"
        assert rt["RITHMIC_URL"].startswith("wss://127.0.0.1:")
        trader_log = tmp_path / "trader.out"
        trader = subprocess.run(
            [*TRADELOOP, "trade", "--venue", "rithmic", "--feed", "rithmic", "--symbols",
             "ES,NQ", "--max-bars", "240", "--no-api", "--run-id", "e2e-rt",
             "--drain-timeout", "60"],
            env={**env, **rt, "RITHMIC_COMMISSION_USD": "2.25"},
            stdout=trader_log.open("wb"),
            stderr=subprocess.STDOUT,
            timeout=180,
            check=False,
        )  # fmt: skip
        assert trader.returncode == 0, trader_log.read_text()[-4000:]
        assert rt["RITHMIC_PASSWORD"] not in trader_log.read_text()
    finally:
        sim.terminate()
        sim.wait(30)

    done = run_closed("e2e-rt")
    events = asyncio.run(read_events(KafkaBus(settings), ["orders", "outcomes"], done))
    ours = [e for e in events if getattr(e, "run_id", "") == "e2e-rt"]
    recs = [e for e in ours if isinstance(e, PositionReconciled)]
    assert recs and all(r.status == "matched" for r in recs)
    fills = [e for e in ours if isinstance(e, OrderFilled)]
    entries = [f for f in fills if f.role == "entry"]
    assert entries and all(f.venue == "rithmic" and f.contract for f in fills)
    assert all(f.commission_usd == pytest.approx(2.25 * f.quantity) for f in fills)
    assert all(f.venue_fill_id.isdigit() and f.venue_order_id.isdigit() for f in fills)
    subs = {e.client_order_id for e in ours if isinstance(e, OrderSubmitted)}
    assert {f.client_order_id for f in fills} <= subs
    outcomes = [e for e in ours if isinstance(e, TradeOutcome) and not e.counterfactual]
    assert outcomes
    by_id = {f.client_order_id: f for f in fills}
    for o in outcomes:
        assert o.entry_order_id in by_id and o.exit_order_id in by_id
        assert o.entry_price == pytest.approx(by_id[o.entry_order_id].fill_price)
    net = net_positions(fills)
    assert set(net.values()) <= {0}, (
        net
    )  # every position was closed: the trader flattens at shutdown
