"""`tradeloop trade --venue ib` through the gateway's nightly restart and a kill -9 of the trader.

Processes over loopback: `tradeloop venues sim ib` (SIGHUP restarts its gateway:
every session drops, connections are refused for a while, orders stay) and two
traders on one state directory. The first trades until it holds a position, lives
through the restart (it reconciles again once back) and is killed with SIGKILL
with the position open; the second restores the bracket, reconciles it as matched
and trades on. Order events, reconciliations and outcomes are read from Kafka.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from infra.bus import KafkaBus
from infra.contracts import OrderFilled, PositionReconciled, TradeOutcome
from infra.settings import settings_env
from infra.stack import free_port
from tests.conftest import SettingsFactory
from tests.helpers import wait_until
from tests.trader.venues.trade_e2e import read_events

pytestmark = pytest.mark.kafka

TRADELOOP = [str(Path(sys.executable).with_name("tradeloop"))]


def _health(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return dict(json.loads(r.read()))
    except OSError:
        return None


def test_a_gateway_restart_and_a_kill9_reconcile_and_the_next_trader_keeps_the_position(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(kafka=True, SYMBOLS="ES,NQ")
    env = {**settings_env(settings), "TRADELOOP_HOME": str(tmp_path / "home")}
    sim_log = tmp_path / "sim.out"
    sim = subprocess.Popen(
        [*TRADELOOP, "venues", "sim", "ib", "--port", "0", "--bar-ms", "60", "--seed", "7"],
        env=env,
        stdout=sim_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:

        def port() -> str | None:
            assert sim.poll() is None, sim_log.read_text()
            lines = sim_log.read_text().splitlines()
            return next((x.partition("=")[2] for x in lines if x.startswith("IB_PORT=")), None)

        ib_port = wait_until(port, 60, what="the simulator")
        assert ib_port is not None
        ib_env = {**env, "IB_PORT": ib_port, "IB_CLIENT_ID": "5"}
        http = free_port()
        log1 = tmp_path / "run1.out"
        run1 = subprocess.Popen(
            [*TRADELOOP, "trade", "--venue", "ib", "--feed", "ib", "--symbols", "ES,NQ",
             "--http-port", str(http), "--run-id", "run1", "--drain-timeout", "60"],
            env=ib_env, stdout=log1.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(run1)

        def holding() -> dict[str, Any] | None:
            assert run1.poll() is None, log1.read_text()[-3000:]
            h = _health(http)
            return h if h and h["venue"]["positions"] and h["venue"]["working_orders"] else None

        wait_until(holding, 90, interval_s=0.05, what="an open position")
        os.kill(sim.pid, signal.SIGHUP)  # the nightly restart

        def reconciled_after_reconnect() -> dict[str, Any] | None:
            assert run1.poll() is None, log1.read_text()[-3000:]
            h = _health(http)
            if h is None or h["reconciliation"] is None:
                return None
            back = h["venue"]["state"] == "connected"
            return h if back and h["reconciliation"]["trigger"] == "reconnect" else None

        after = wait_until(reconciled_after_reconnect, 60, interval_s=0.05, what="the reconnect")
        assert after is not None and after["reconciliation"]["clean"] is True
        killed = wait_until(holding, 90, interval_s=0.05, what="a position to kill the trader with")
        os.kill(run1.pid, signal.SIGKILL)
        assert killed is not None
        children = {w["client_order_id"] for w in killed["venue"]["working_orders"]}
        run1.wait(30)
        log2 = tmp_path / "run2.out"
        run2 = subprocess.run(
            [*TRADELOOP, "trade", "--venue", "ib", "--feed", "ib", "--symbols", "ES,NQ",
             "--max-bars", "40", "--no-api", "--run-id", "run2", "--drain-timeout", "60"],
            env=ib_env, stdout=log2.open("wb"), stderr=subprocess.STDOUT, timeout=180, check=False,
        )  # fmt: skip
        assert run2.returncode == 0, log2.read_text()[-4000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        sim.terminate()
        sim.wait(30)

    def done(events: list[Any]) -> bool:
        return any(isinstance(e, PositionReconciled) and e.run_id == "run2" for e in events)

    events = asyncio.run(read_events(KafkaBus(settings), ["orders", "outcomes"], done))
    recs = [e for e in events if isinstance(e, PositionReconciled)]
    run1_recs = [r for r in recs if r.run_id == "run1"]
    run2_recs = [r for r in recs if r.run_id == "run2"]
    assert len(run1_recs) >= 4  # at start and after the reconnect, per symbol
    assert all(r.status == "matched" for r in run1_recs + run2_recs), recs
    fills = [e for e in events if isinstance(e, OrderFilled) and e.run_id == "run2"]
    # the bracket open at the kill: still working at run2's start (restored, reconciled with
    # its children), or its exit filled while no trader ran and run2 published it on restore
    kept = {o for r in run2_recs for o in r.working_orders}
    caught_up = {f.client_order_id for f in fills if f.role in ("stop", "target")}
    assert children & (kept | caught_up), (children, kept, caught_up)
    assert fills and all(f.venue == "ib" for f in fills)  # run2 traded, flattened at the end
    assert any(isinstance(e, TradeOutcome) and e.run_id == "run2" for e in events)
