"""A trader killed with kill -9 while a position is open, restarted on the same state directory.

The bars come from the sim feed. An in-process engine runs them uninterrupted first
and names a real trade whose stop or target fills a few bars after its entry. The
first `tradeloop trade` gets the bars up to just after that entry's fill, then one
bar 30 days later: the pacer holds it back, so the process sits with the position
open and its stop and target working, and is killed with SIGKILL. The second one,
on the same TRADELOOP_HOME, gets the bars from there on: it must reconcile
(`matched`), keep the stop and target working, and exit the trade exactly as the
uninterrupted run did (same exit order, price and PnL), outcome and order events
on the real broker.
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

import pandas as pd
import pytest

from infra.bus import KafkaBus
from infra.contracts import (
    OrderFilled,
    OrderSubmitted,
    PositionReconciled,
    SignalSnapshot,
    TradeOutcome,
)
from infra.settings import Settings, settings_env
from infra.stack import free_port
from tests.conftest import SettingsFactory
from tests.helpers import wait_until
from tests.trader.venues.trade_e2e import read_events
from trader.core.bar import MarketBar
from trader.core.engine import Engine, EngineConfig
from trader.feeds.sim import SimFeed

pytestmark = pytest.mark.kafka

TRADELOOP = [str(Path(sys.executable).with_name("tradeloop"))]
TOKEN = "kill9-test-token"
#: The bars, a real trade exiting by stop or target, its fill and its exit bar index.
Scenario = tuple[list[MarketBar], TradeOutcome, int, int]


def _scenario() -> Scenario:
    """Return the bars, a real trade exiting by stop or target, its fill and exit bar index."""
    bars = list(SimFeed(("ES",), seed=3, days=3))
    out: list[Any] = []
    engine = Engine(
        Settings(_env_file=None),  # type: ignore[call-arg]
        EngineConfig(symbols=("ES",), source="sim", run_id="ref", record_metrics=False),
        sinks=[lambda _t, e: out.append(e)],
    )
    fill_bar: dict[str, int] = {}
    for i, bar in enumerate(bars):
        n = len(out)
        engine.on_bar(bar)
        for e in out[n:]:
            if isinstance(e, OrderFilled) and e.role == "entry":
                fill_bar[e.client_order_id] = i
            if (
                isinstance(e, TradeOutcome)
                and not e.counterfactual
                and e.exit_reason in ("stop", "target")
                and i - fill_bar[e.entry_order_id] >= 4
            ):
                return bars, e, fill_bar[e.entry_order_id], i
    raise AssertionError("no trade lasting 4 bars in the sim bars")


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    """Return `_scenario()`, run once for both tests (its reference run is deterministic)."""
    return _scenario()


def _csv(path: Path, bars: list[MarketBar], sentinel: bool) -> Path:
    rows = [
        {"ts": pd.Timestamp(b.ts_s, unit="s", tz="UTC"), "open": b.open, "high": b.high,
         "low": b.low, "close": b.close, "volume": b.volume, "symbol": b.symbol}
        for b in bars
    ]  # fmt: skip
    if sentinel:  # held back by the pacer: the process waits with its position open
        rows.append({**rows[-1], "ts": rows[-1]["ts"] + pd.Timedelta(days=30)})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _health(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return dict(json.loads(r.read()))
    except OSError:
        return None


def _start(
    env: dict[str, str], csv: Path, port: int, speed: float, log: Path
) -> subprocess.Popen[bytes]:
    cmd = [*TRADELOOP, "trade", "--feed", f"csv:{csv}", "--symbols", "ES", "--speed", str(speed),
           "--http-port", str(port), "--run-id", log.stem, "--drain-timeout", "60"]  # fmt: skip
    return subprocess.Popen(
        cmd, env=env, cwd=log.parent, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def test_kill9_with_an_open_position_then_restart_manages_its_stop_and_target(
    scenario: Scenario, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    bars, ref, fill_i, exit_i = scenario
    entry_id = ref.entry_order_id
    stem = entry_id.removesuffix("-entry")
    settings = make_settings(kafka=True)
    home = tmp_path / "home"
    env = {**settings_env(settings), "TRADELOOP_HOME": str(home), "TRADER_API_TOKEN": TOKEN}
    port = free_port()
    first = _csv(tmp_path / "first.csv", bars[: fill_i + 2], sentinel=True)
    speed = (fill_i + 2) * 60 / 4.0  # the real bars in about 4 s, the sentinel 30 days later
    log1 = tmp_path / "run1.log"
    proc = _start(env, first, port, speed, log1)
    try:

        def position_open() -> dict[str, Any] | None:
            assert proc.poll() is None, log1.read_text()
            h = _health(port)
            if h and h["venue"]["positions"] and h["engine"]["bars"] >= fill_i + 2:
                return h
            return None

        health = wait_until(position_open, 120, interval_s=0.2, what="the open position")
        assert health is not None
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    (pos,) = health["venue"]["positions"]
    assert pos["symbol"] == "ES" and abs(pos["quantity"]) == ref.quantity
    working = {w["client_order_id"]: w for w in health["venue"]["working_orders"]}
    assert set(working) == {f"{stem}-stop", f"{stem}-target"}
    assert health["reconciliation"]["clean"] is True

    journal = home / "trader" / "orders.jsonl"
    assert journal.exists() and oct(journal.stat().st_mode & 0o777) == "0o600"
    second = _csv(tmp_path / "second.csv", bars[fill_i + 2 : exit_i + 5], sentinel=False)
    log2 = tmp_path / "run2.log"
    proc2 = _start(env, second, free_port(), 0.0, log2)
    assert proc2.wait(180) == 0, log2.read_text()

    bus = KafkaBus(settings)

    def done(events: list[Any]) -> bool:
        signal_ids = {
            e.signal_id
            for e in events
            if isinstance(e, OrderSubmitted) and e.client_order_id == entry_id
        }
        return any(
            isinstance(e, TradeOutcome) and e.entry_order_id == entry_id and e.run_id == "run2"
            for e in events
        ) and any(isinstance(e, SignalSnapshot) and e.event_id in signal_ids for e in events)

    events = asyncio.run(read_events(bus, ["orders", "outcomes", "signals"], done))
    recs = [e for e in events if isinstance(e, PositionReconciled) and e.run_id == "run2"]
    assert [(r.symbol, r.status) for r in recs] == [("ES", "matched")], recs
    assert recs[0].quantity == pos["quantity"] and set(recs[0].working_orders) == set(working)
    exits = [
        e for e in events
        if isinstance(e, OrderFilled) and e.run_id == "run2" and e.client_order_id.startswith(stem)
    ]  # fmt: skip
    assert [(e.role, e.client_order_id) for e in exits] == [
        (ref.exit_reason, f"{stem}-{ref.exit_reason}")
    ]
    assert exits[0].fill_price == ref.exit_price
    (outcome,) = [
        e
        for e in events
        if isinstance(e, TradeOutcome) and e.run_id == "run2" and e.entry_order_id == entry_id
    ]
    assert outcome.exit_order_id == f"{stem}-{ref.exit_reason}"
    assert outcome.exit_reason == ref.exit_reason and outcome.exit_price == ref.exit_price
    assert outcome.pnl_usd == pytest.approx(ref.pnl_usd, abs=1e-6)
    assert outcome.r_multiple == pytest.approx(ref.r_multiple, abs=1e-6)
    assert outcome.entry_price == ref.entry_price
    # the outcome names the signal the first process decided on (its id travelled in the order)
    (submitted,) = [
        e
        for e in events
        if isinstance(e, OrderSubmitted) and e.client_order_id == entry_id and e.run_id == "run1"
    ]
    assert outcome.signal_id == submitted.signal_id
    assert any(
        isinstance(e, SignalSnapshot) and e.event_id == submitted.signal_id and e.run_id == "run1"
        for e in events
    )


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRADELOOP, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_flatten_halts_the_trader_across_kill9_until_resume(
    scenario: Scenario, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    bars, _ref, fill_i, exit_i = scenario
    settings = make_settings(kafka=True)
    home = tmp_path / "home"
    port = free_port()
    env = {
        **settings_env(settings),
        "TRADELOOP_HOME": str(home),
        "TRADER_API_TOKEN": TOKEN,
        "HTTP_PORT": str(port),
    }
    first = _csv(tmp_path / "first.csv", bars[: fill_i + 2], sentinel=True)
    log1 = tmp_path / "run1.log"
    proc = _start(env, first, port, (fill_i + 2) * 60 / 4.0, log1)
    try:

        def position_open() -> bool:
            assert proc.poll() is None, log1.read_text()
            h = _health(port)
            return bool(h and h["venue"]["positions"])

        wait_until(position_open, 120, interval_s=0.2, what="the open position")
        refused = _cli({**env, "TRADER_API_TOKEN": "not-the-token-7f3a"}, "flatten")
        assert refused.returncode == 1 and "answered 401" in refused.stderr
        assert "not-the-token-7f3a" not in refused.stderr + refused.stdout
        done = _cli(env, "flatten", "--by", "ops", "--reason", "drill")
        assert done.returncode == 0, done.stderr
        assert "halted by ops" in done.stdout and "flattened 1 positions" in done.stdout
        health = _health(port)
        assert health is not None and health["status"] == "halted"
        assert health["venue"]["positions"] == [] and health["venue"]["working_orders"] == []
        assert "kill switch engaged by ops" in health["entries"]["refused_because"]
        assert "drill" in health["entries"]["refused_because"]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    state = home / "trader" / "killswitch.json"
    assert oct(state.stat().st_mode & 0o777) == "0o600"
    assert json.loads(state.read_text())["halted"] is True

    second = _csv(tmp_path / "second.csv", bars[fill_i + 2 : exit_i + 5], sentinel=True)
    log2 = tmp_path / "run2.log"
    proc2 = _start(env, second, port, 60_000.0, log2)
    try:

        def up_again() -> dict[str, Any] | None:
            assert proc2.poll() is None, log2.read_text()
            h = _health(port)
            return h if h and h["engine"]["bars"] > 0 else None

        health = wait_until(up_again, 120, interval_s=0.2, what="the restarted trader")
        assert health is not None
        assert health["kill_switch"]["halted"] is True and health["kill_switch"]["by"] == "ops"
        assert health["entries"]["allowed"] is False and health["status"] == "halted"
        # the flatten happened before the kill: the restart finds the venue and journal flat
        assert health["reconciliation"]["clean"] is True
        assert health["venue"]["positions"] == []
        lifted = _cli(env, "resume", "--by", "ops", "--reason", "drill over")
        assert lifted.returncode == 0, lifted.stderr
        assert "entries allowed" in lifted.stdout
        after = _health(port)
        assert after is not None and after["entries"]["allowed"] is True
        assert after["kill_switch"]["halted"] is False
    finally:
        os.kill(proc2.pid, signal.SIGKILL)  # it waits on the sentinel bar; nothing left to save
        proc2.wait(30)
    assert json.loads(state.read_text())["halted"] is False
