"""The kill switch: cancel every working order, flatten every position, halt entries.

The state (halted or resumed, by whom, why, when) lives in one JSON file under the
trader's state directory (`{home}/trader/killswitch.json`, mode 0600), replaced
atomically and fsynced, so a restarted trader comes back halted if it was halted.

Triggers: `POST /kill` on the trader's API (`tradeloop flatten`), the prop-firm
rules in `trader.core.risk` (daily loss limit, maximum loss limit). `POST /resume`
(`tradeloop resume`) lifts it. A halt from the daily loss limit also lifts itself
when the next trading day starts (TopstepX: "until the start of the next trading
day"); every other halt waits for an operator.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from infra.settings import Settings
from trader.venues.base import Venue

__all__ = [
    "KILL_HOLD",
    "KillState",
    "KillSwitch",
    "KillSwitchError",
    "killswitch_path",
    "trader_state_dir",
    "write_private_json",
]

log = logging.getLogger(__name__)

#: The name of the risk hold the kill switch places while halted.
KILL_HOLD = "kill_switch"


class KillSwitchError(RuntimeError):
    """Raise when the kill-switch state file cannot be read or written."""


class Holds(Protocol):
    """Where entry holds are kept (`trader.core.risk.RiskManager`)."""

    def hold(self, name: str, why: str, until_day: int | None = None) -> None: ...

    def release(self, name: str) -> None: ...

    @property
    def on_hold_expired(self) -> dict[str, Callable[[int], object]]: ...


def trader_state_dir(settings: Settings) -> Path:
    """Return the trader's own state directory (`{home}/trader`)."""
    return settings.home / "trader"


def killswitch_path(settings: Settings) -> Path:
    """Return the kill-switch state file of this trader."""
    return trader_state_dir(settings) / "killswitch.json"


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` atomically with `data` as JSON: mode 0600, file and directory fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps(data, sort_keys=True, indent=1).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@dataclass(frozen=True)
class KillState:
    """Halted or resumed, who changed it, why, when, and what the last trigger did."""

    halted: bool = False
    by: str = ""
    reason: str = ""
    at: str = ""
    #: a halt that lifts itself when this trading day (days since epoch, 18:00 ET) starts
    until_trading_day: int | None = None
    triggers: int = 0
    last_actions: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """Return one line saying why entries are refused (or that they are not)."""
        if not self.halted:
            return "entries allowed"
        until = (
            f"; lifts at the start of trading day {_day_iso(self.until_trading_day)}"
            if self.until_trading_day is not None
            else "; `tradeloop resume` lifts it"
        )
        return f"kill switch engaged by {self.by} at {self.at}: {self.reason}{until}"


def _day_iso(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, UTC).date().isoformat()


class KillSwitch:
    """The persisted kill-switch state and the actions that engage and lift it."""

    def __init__(self, path: str | Path, holds: Holds | None = None) -> None:
        self.path = Path(path)
        self.holds = holds
        if holds is not None:  # a dated halt lifts when its trading day starts
            holds.on_hold_expired[KILL_HOLD] = self.on_trading_day
        self.state = self._load()
        self._sync_hold()

    def _load(self) -> KillState:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return KillState()
        except (OSError, ValueError) as exc:
            raise KillSwitchError(
                f"kill switch state {self.path} is unreadable ({exc}); fix or remove it"
            ) from None
        try:
            return KillState(**raw)
        except TypeError as exc:
            raise KillSwitchError(
                f"kill switch state {self.path} has unexpected fields ({exc}); fix or remove it"
            ) from None

    def _save(self, state: KillState) -> None:
        try:
            write_private_json(self.path, asdict(state))
        except OSError as exc:
            raise KillSwitchError(f"cannot write kill switch state {self.path}: {exc}") from None
        self.state = state
        self._sync_hold()

    def _sync_hold(self) -> None:
        if self.holds is None:
            return
        if self.state.halted:
            self.holds.hold(KILL_HOLD, self.state.describe(), self.state.until_trading_day)
        else:
            self.holds.release(KILL_HOLD)

    @property
    def halted(self) -> bool:
        """Say whether entries are halted."""
        return self.state.halted

    def halt(self, by: str, reason: str, until_trading_day: int | None = None) -> KillState:
        """Persist a halt (no venue action); return the new state."""
        state = KillState(
            halted=True,
            by=by,
            reason=reason,
            at=datetime.now(UTC).isoformat(),
            until_trading_day=until_trading_day,
            triggers=self.state.triggers + 1,
            last_actions=dict(self.state.last_actions),
        )
        self._save(state)
        log.warning("%s", state.describe())
        return state

    def trigger(
        self,
        venue: Venue | None,
        by: str,
        reason: str,
        until_trading_day: int | None = None,
    ) -> KillState:
        """Halt entries first, then cancel every working order and flatten every position.

        The halt is persisted before any venue call, so a crash in between still
        restarts halted. The venue answers with order events (cancels, flatten
        fills); a venue error is recorded in the state and re-raised.
        """
        self.halt(by, reason, until_trading_day)
        actions: dict[str, Any] = {"at": datetime.now(UTC).isoformat()}
        error: Exception | None = None
        if venue is not None:
            try:
                actions["cancelled"] = len(venue.working_orders())
                actions["flattened"] = len(venue.positions())
                venue.cancel_all()
                venue.flatten(reason="kill_switch")
            except Exception as exc:  # recorded and re-raised: the halt stays
                actions["error"] = f"{type(exc).__name__}: {exc}"[:300]
                error = exc
        self._save(replace(self.state, last_actions=actions))
        if error is not None:
            raise error
        return self.state

    def resume(self, by: str, reason: str = "resumed") -> KillState:
        """Lift the halt; return the new state."""
        state = KillState(
            halted=False,
            by=by,
            reason=reason,
            at=datetime.now(UTC).isoformat(),
            until_trading_day=None,
            triggers=self.state.triggers,
            last_actions=dict(self.state.last_actions),
        )
        self._save(state)
        log.warning("kill switch lifted by %s: %s", by, reason)
        return state

    def on_trading_day(self, trading_day: int) -> bool:
        """Lift a halt whose trading day has come; return True when it was lifted."""
        until = self.state.until_trading_day
        if self.state.halted and until is not None and trading_day >= until:
            self.resume("schedule", f"trading day {_day_iso(trading_day)} started")
            return True
        return False

    def status(self) -> dict[str, Any]:
        """Return the state for /healthz."""
        out = asdict(self.state)
        out["entries"] = self.state.describe()
        out["file"] = str(self.path)
        return out
