"""The kill switch: persisted halt (0600, survives a reload), venue actions, holds, expiry."""

from __future__ import annotations

import asyncio
import json
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra.contracts import OrderCancelled, OrderFilled, VenueEvent
from infra.settings import Settings
from trader.core.bar import MarketBar
from trader.core.instruments import instruments_from_settings
from trader.core.killswitch import KILL_HOLD, KillSwitch, KillSwitchError
from trader.core.risk import RiskLimits, RiskManager
from trader.venues.base import BracketOrder, VenueDisconnected
from trader.venues.paper import PaperVenue

T0 = int(datetime(2024, 3, 5, 15, 0, tzinfo=UTC).timestamp())  # 10:00 ET, a Tuesday
INSTRUMENTS = instruments_from_settings(Settings(_env_file=None))  # type: ignore[call-arg]


@dataclass(frozen=True)
class Session:
    """The exchange session a bar falls in (what `SessionState` asks of the features)."""

    in_rth: bool = True
    minutes_to_close: int = 300


RTH = Session()


def _venue_with_a_position_and_a_working_entry() -> tuple[PaperVenue, list[VenueEvent]]:
    venue = PaperVenue(INSTRUMENTS)
    seen: list[VenueEvent] = []
    venue.add_listener(seen.append)
    venue.on_bar(MarketBar("ES", T0, 5000, 5001, 4999, 5000, 10.0), RTH)
    venue.submit_bracket(BracketOrder("a-entry", "ES", "buy", 2, 4.0, 8.0))
    venue.on_bar(MarketBar("ES", T0 + 60, 5000, 5002, 4999, 5001, 10.0), RTH)
    venue.submit_bracket(BracketOrder("b-entry", "ES", "sell", 1, 4.0, 8.0))
    assert len(venue.positions()) == 1 and len(venue.working_orders()) == 3
    return venue, seen


def test_trigger_cancels_flattens_halts_and_persists_private(tmp_path: Path) -> None:
    path = tmp_path / "trader" / "killswitch.json"
    risk = RiskManager(RiskLimits())
    ks = KillSwitch(path, risk)
    assert not ks.halted and risk.check("ES", 1, 10.0, 0)[1] == "taken"
    venue, seen = _venue_with_a_position_and_a_working_entry()
    state = ks.trigger(venue, "api", "operator pressed the button")
    assert venue.positions() == [] and venue.working_orders() == []
    flat = [e for e in seen if isinstance(e, OrderFilled) and e.role == "flatten"]
    assert len(flat) == 1 and flat[0].quantity == 2 and flat[0].side == "sell"
    assert {e.client_order_id for e in seen if isinstance(e, OrderCancelled)} == {
        "a-stop",
        "a-target",
        "b-entry",
    }
    assert state.halted and state.by == "api" and state.reason == "operator pressed the button"
    assert state.last_actions["cancelled"] == 3 and state.last_actions["flattened"] == 1
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
    venue, _ = _venue_with_a_position_and_a_working_entry()
    asyncio.run(venue.disconnect())
    ks = KillSwitch(tmp_path / "ks.json")
    with pytest.raises(VenueDisconnected):
        ks.trigger(venue, "api", "test")
    reloaded = KillSwitch(tmp_path / "ks.json")
    assert reloaded.halted and reloaded.state.last_actions["cancelled"] == 3
    assert reloaded.state.last_actions["error"].startswith("VenueDisconnected: ")
    assert len(venue.positions()) == 1  # nothing was done: the operator must know


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
