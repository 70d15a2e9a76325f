"""`tradeloop trade --venue ib --feed ib` against `tradeloop venues sim ib`, outcomes on Kafka.

Two processes over loopback: the simulator plays the sim feed's bars (regular
hours, seed 7) as IB real-time bars and fills orders on them; the trader trades
those bars through ib_async and spools its order events and outcomes to the real
broker.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.bus import KafkaBus
from infra.contracts import OrderFilled, OrderSubmitted, PositionReconciled, TradeOutcome, decode
from infra.settings import settings_env
from tests.conftest import SettingsFactory
from tests.helpers import wait_until

pytestmark = pytest.mark.kafka

TRADELOOP = [str(Path(sys.executable).with_name("tradeloop"))]


async def _read(bus: KafkaBus, topics: list[str], until: Any, timeout_s: float = 60.0) -> list[Any]:
    consumer = bus.consumer([bus.topic(t) for t in topics], None, from_beginning=True)
    await consumer.start()
    out: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not until(out) and loop.time() < deadline:
            out.extend(decode(r.value or b"") for r in await consumer.poll(timeout_ms=500))
    finally:
        await consumer.stop()
    return out


def test_trade_on_the_ib_simulator_fills_and_records_outcomes(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(kafka=True, SYMBOLS="ES,NQ")
    env = {**settings_env(settings), "TRADELOOP_HOME": str(tmp_path / "home")}
    sim_log = tmp_path / "sim.out"
    sim = subprocess.Popen(
        [*TRADELOOP, "venues", "sim", "ib", "--port", "0", "--bar-ms", "25", "--seed", "7"],
        env=env,
        stdout=sim_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:

        def port() -> str | None:
            assert sim.poll() is None, sim_log.read_text()
            for line in sim_log.read_text().splitlines():
                if line.startswith("IB_PORT="):
                    return line.partition("=")[2]
            return None

        ib_port = wait_until(port, 60, interval_s=0.1, what="the simulator's settings")
        assert ib_port is not None
        trader_log = tmp_path / "trader.out"
        trader = subprocess.run(
            [*TRADELOOP, "trade", "--venue", "ib", "--feed", "ib", "--symbols", "ES,NQ",
             "--max-bars", "240", "--no-api", "--run-id", "e2e-ib", "--drain-timeout", "60"],
            env={**env, "IB_PORT": ib_port, "IB_CLIENT_ID": "5"},
            stdout=trader_log.open("wb"),
            stderr=subprocess.STDOUT,
            timeout=180,
            check=False,
        )  # fmt: skip
        assert trader.returncode == 0, trader_log.read_text()[-4000:]
    finally:
        sim.terminate()
        sim.wait(30)

    def done(events: list[Any]) -> bool:
        return any(isinstance(e, TradeOutcome) and not e.counterfactual for e in events)

    events = asyncio.run(_read(KafkaBus(settings), ["orders", "outcomes"], done))
    ours = [e for e in events if getattr(e, "run_id", "") == "e2e-ib"]
    recs = [e for e in ours if isinstance(e, PositionReconciled)]
    assert recs and all(r.status == "matched" for r in recs)
    fills = [e for e in ours if isinstance(e, OrderFilled)]
    entries = [f for f in fills if f.role == "entry"]
    assert entries and all(f.venue == "ib" and f.contract for f in fills)
    assert all(f.commission_usd == pytest.approx(2.25 * f.quantity) for f in fills)
    assert all(f.venue_fill_id.startswith("0000e0d5.") for f in fills)
    subs = {e.client_order_id for e in ours if isinstance(e, OrderSubmitted)}
    assert {f.client_order_id for f in fills} <= subs
    outcomes = [e for e in ours if isinstance(e, TradeOutcome) and not e.counterfactual]
    assert outcomes
    by_id = {f.client_order_id: f for f in fills}
    for o in outcomes:
        assert o.entry_order_id in by_id and o.exit_order_id in by_id
        assert o.entry_price == pytest.approx(by_id[o.entry_order_id].fill_price)
    # every position was closed: the trader flattens at shutdown
    net: dict[str, int] = {}
    for f in fills:
        net[f.symbol] = net.get(f.symbol, 0) + (f.quantity if f.side == "buy" else -f.quantity)
    assert set(net.values()) <= {0}
