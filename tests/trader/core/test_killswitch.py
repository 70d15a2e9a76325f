"""The kill switch: persisted halt (0600, survives a reload), venue actions, holds, expiry."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from trader.core.killswitch import KILL_HOLD, KillSwitch, KillSwitchError
from trader.core.risk import RiskLimits, RiskManager


class Book:
    """A venue's book, reduced to what the kill switch touches."""

    def __init__(self, orders: int, positions: int, fail: bool = False) -> None:
        self.orders = [f"o{i}" for i in range(orders)]
        self.positions = [f"p{i}" for i in range(positions)]
        self.fail = fail
        self.calls: list[str] = []

    async def cancel_all(self) -> list[str]:
        self.calls.append("cancel_all")
        done, self.orders = self.orders, []
        return done

    async def flatten(self) -> int:
        self.calls.append("flatten")
        if self.fail:
            raise ConnectionError("venue unreachable")
        n, self.positions = len(self.positions), []
        return n


def test_trigger_cancels_flattens_halts_and_persists_private(tmp_path: Path) -> None:
    path = tmp_path / "trader" / "killswitch.json"
    risk = RiskManager(RiskLimits())
    ks = KillSwitch(path, risk)
    assert not ks.halted and risk.check("ES", 1, 10.0, 0)[1] == "taken"
    book = Book(orders=3, positions=2)
    state = asyncio.run(ks.trigger(book, "api", "operator pressed the button"))
    assert book.calls == ["cancel_all", "flatten"] and not book.orders and not book.positions
    assert state.halted and state.by == "api" and state.reason == "operator pressed the button"
    assert state.last_actions["cancelled"] == 3 and state.last_actions["flattened"] == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert risk.check("ES", 1, 10.0, 0) == (0, KILL_HOLD)
    assert "kill switch engaged by api" in (risk.entry_block() or "")
    # a new process reads the same file and comes back halted
    risk2 = RiskManager(RiskLimits())
    again = KillSwitch(path, risk2)
    assert again.halted and again.state.at == state.at and again.state.triggers == 1
    assert risk2.check("NQ", 1, 10.0, 0) == (0, KILL_HOLD)
    again.resume("cli", "checked the book")
    assert not KillSwitch(path).halted
    assert risk2.check("NQ", 1, 10.0, 0)[1] == "taken"
    assert json.loads(path.read_text())["by"] == "cli"


def test_venue_failure_keeps_the_halt_and_is_recorded(tmp_path: Path) -> None:
    ks = KillSwitch(tmp_path / "ks.json")
    with pytest.raises(ConnectionError):
        asyncio.run(ks.trigger(Book(1, 1, fail=True), "api", "test"))
    reloaded = KillSwitch(tmp_path / "ks.json")
    assert reloaded.halted
    assert reloaded.state.last_actions["error"] == "ConnectionError: venue unreachable"
    assert reloaded.state.last_actions["cancelled"] == 1


def test_dated_halt_lifts_when_its_trading_day_starts(tmp_path: Path) -> None:
    risk = RiskManager(RiskLimits())
    risk.new_bar(100)
    ks = KillSwitch(tmp_path / "ks.json", risk)
    ks.halt("daily_loss_limit", "day's net PnL -1000", until_trading_day=101)
    assert "lifts at the start of trading day 1970-04-12" in ks.state.describe()
    risk.new_bar(100)
    assert ks.halted and KILL_HOLD in risk.holds
    risk.new_bar(101)
    assert not ks.halted and KILL_HOLD not in risk.holds
    assert ks.state.by == "schedule" and not KillSwitch(tmp_path / "ks.json").halted


def test_corrupt_state_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ks.json"
    path.write_text("{not json")
    with pytest.raises(KillSwitchError, match="unreadable"):
        KillSwitch(path)
    path.write_text('{"halted": true, "colour": "red"}')
    with pytest.raises(KillSwitchError, match="unexpected fields"):
        KillSwitch(path)
