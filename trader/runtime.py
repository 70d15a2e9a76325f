"""What a running trader is made of, shared by the trading loop and the HTTP API."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.settings import Settings
from trader import metrics
from trader.core.engine import Engine
from trader.delivery.models import ModelHolder, ModelSet
from trader.delivery.startup import release_trust
from trader.feeds.base import Feed
from trader.io.drainer import OutboxDrainer
from trader.io.outbox import Outbox

if TYPE_CHECKING:  # hot swap and canary (trader/delivery/hotswap.py, trader/delivery/canary.py)
    from trader.core.killswitch import KillSwitch
    from trader.delivery.canary import ModelRouter
    from trader.delivery.hotswap import HotSwapper
    from trader.io.console.feed import ConsoleFeed
    from trader.io.drift_watch import DriftWatcher
    from trader.recovery import Recovery
    from trader.venues.base import Venue
    from trader.venues.reconcile import Reconciliation

__all__ = ["Runtime", "build_info"]


@lru_cache(maxsize=1)
def _git_sha() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def build_info(mode: str) -> dict[str, str]:
    """Return the package version, the git sha of the source tree and the run mode."""
    try:
        version = metadata.version("tradeloop")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"version": version, "git_sha": _git_sha(), "mode": mode}


@dataclass
class Runtime:
    """The engine, its feed, models and outbox, plus model-release bookkeeping."""

    settings: Settings
    engine: Engine
    feed: Feed
    holder: ModelHolder
    mode: str = "paper"
    outbox: Outbox | None = None
    drainer: OutboxDrainer | None = None
    started_at: float = field(default_factory=time.time)
    rejections: dict[str, int] = field(default_factory=dict)
    last_rejected: dict[str, Any] | None = None
    bar_errors: int = 0  # bars whose processing raised (logged; trading went on)
    last_bar_error: str | None = None
    swapper: HotSwapper | None = None  # follows model releases (None: fixed models)
    router: ModelRouter | None = None  # canary routing (None: CANARY_MODE=off)
    venue: Venue | None = None  # where orders go (None: the engine's own paper broker)
    killswitch: KillSwitch | None = None  # persisted halt (trader/core/killswitch.py)
    reconciliation: Reconciliation | None = None  # the last start-up/reconnect comparison
    recovery: Recovery | None = None  # journal and reconciliation (trader/recovery.py)
    console: ConsoleFeed | None = None  # the operator console's facts (trader/io/console/)
    drift: DriftWatcher | None = None  # the worker's drift alerts, for the console

    def entries(self) -> dict[str, Any]:
        """Return whether new entries are allowed and, if not, why (for /healthz)."""
        block = self.engine.risk.entry_block()
        return {"allowed": block is None, "refused_because": block}

    def swap_models(self, new: ModelSet) -> ModelSet:
        """Serve `new` from the next decision on; count the swap; return the old set."""
        old = self.holder.swap(new)
        metrics.MODEL_SWAPS.inc()
        metrics.set_release(new.release)
        return old

    def models_status(self) -> dict[str, Any]:
        """Return the serving models: path, release, versions and age."""
        current = self.holder.current
        return {
            "path": "rules" if current.empty else "models",
            "release": current.release,
            "versions": dict(current.versions),
            "loaded_at": datetime.fromtimestamp(current.loaded_at, UTC).isoformat()
            if current.loaded_at
            else None,
            "age_s": round(current.age_s(), 1) if current.loaded_at else None,
            "swaps": self.holder.swaps,
            "rl_enabled": self.settings.rl_enabled,
            "hot_swap": self.swapper.status() if self.swapper is not None else None,
            "trust": release_trust(self.settings),
        }

    def refresh_gauges(self) -> None:
        """Update the gauges that are read at scrape time."""
        current = self.holder.current
        metrics.MODEL_AGE.set(current.age_s() if current.loaded_at else 0.0)
        if self.outbox is not None:
            metrics.OUTBOX_DEPTH.set(self.outbox.depth)
            metrics.OUTBOX_HELD.set(self.outbox.held)
