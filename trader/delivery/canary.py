"""Champion/challenger routing: shadow scoring, a canary share, promotion and rollback.

`CANARY_MODE` chooses what a newly verified release does while a champion serves:

- `off`: it replaces the champion at once (the hot swap).
- `shadow`: it becomes the challenger; the champion decides every trade and the
  challenger is scored beside it on the same inputs (`ModelRouter.shadow()`), its
  choice recorded but never traded.
- `canary`: it becomes the challenger and decides `CANARY_SHARE` of decisions,
  chosen by a stable hash of symbol and bar time, so a replay routes the same way.

A trial ends when the challenger has `CANARY_MIN_DECISIONS` resolved decisions or
`CANARY_WINDOW_SEC` has passed. It is promoted (one `ModelHolder.swap`) if its mean R
per resolved decision is not worse than the champion's over the same period by more
than `tolerance_r`, and rolled back (the champion keeps serving) otherwise.

A decision resolves when its trade closes (the R-multiple of the outcome) or at once
when it is not taken (R 0). In shadow mode both variants decide every signal on the
same inputs: the champion's choice resolves with its trade's R, the challenger's with
the R of the candidate it would have taken, which the engine follows as a
counterfactual trade (the champion's own trade when both chose the same candidate).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from infra.settings import Settings
from trader.delivery.canary_rules import (
    DEFAULT_TOLERANCE_R,
    MASK64,
    CanaryVerdict,
    VariantStats,
    evaluate,
    mix64,
    route_fraction,
)
from trader.delivery.models import ModelHolder, ModelSet

__all__ = [
    "CanaryVerdict",
    "ModelRouter",
    "TrialListener",
    "VariantStats",
    "evaluate",
    "route_fraction",
]

log = logging.getLogger(__name__)

Mode = Literal["off", "shadow", "canary"]
_MAX_PENDING = 20_000


class TrialListener(Protocol):
    """What a router tells its subscribers (`ModelRouter.subscribe`) as trials end."""

    def trial_promoted(self, models: ModelSet, reason: str) -> None:
        """Take note that `models` won its trial and now serves (the holder is swapped)."""

    def trial_rolled_back(self, result: dict[str, Any]) -> None:
        """Take note that a challenger lost its trial (`result` as in `history`)."""

    def retire(self, models: ModelSet) -> None:
        """Drop a set that no longer serves, off the decision path (sessions take ms to free)."""


@dataclass(frozen=True, slots=True)
class _Route:
    """Everything `select` reads, replaced as one reference."""

    mode: str
    champion: tuple[ModelSet, str]
    challenger: tuple[ModelSet, str] | None
    threshold: int  # a decision goes to the challenger when its 32-bit hash is below this


@dataclass(slots=True)
class _Trial:
    release: str
    sequence: int | None
    models: ModelSet
    started_mono: float
    started_at: datetime
    champion_release: str
    champion: VariantStats = field(default_factory=VariantStats)
    challenger: VariantStats = field(default_factory=VariantStats)
    disagreements: int = 0
    # signal id -> (resolves the champion, resolves the challenger) once its trade closes
    pending: OrderedDict[str, tuple[bool, bool]] = field(default_factory=OrderedDict)


class ModelRouter:
    """Say which model set decides each decision, run the trial, promote or roll back.

    The decision engine calls `select(symbol, ts_event)` once per decision and gets a
    pre-built `(ModelSet, variant)` pair; in shadow mode it also scores `shadow()`.
    After deciding it calls `record_decision` (and `record_shadow`), and on every
    closed trade `record_outcome`. The hot swapper hands it releases with
    `start_challenger`/`cancel`/`refresh` and hears of promotions, rollbacks and retired
    sets as a `TrialListener` (`subscribe`). Everything runs on the engine's thread.
    """

    def __init__(
        self,
        holder: ModelHolder,
        *,
        mode: Mode = "off",
        share: float = 0.2,
        min_decisions: int = 50,
        window_sec: float = 1800.0,
        tolerance_r: float = DEFAULT_TOLERANCE_R,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in ("off", "shadow", "canary"):
            raise ValueError(f"CANARY_MODE must be off, shadow or canary, not {mode!r}")
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"CANARY_SHARE must lie in [0, 1], not {share}")
        self.holder = holder
        self.mode: Mode = mode
        self.share = share
        self.min_decisions = min_decisions
        self.window_sec = window_sec
        self.tolerance_r = tolerance_r
        self._clock = clock
        self._seeds: dict[str, int] = {}
        self._trial: _Trial | None = None
        self._route = _Route(mode, (holder.current, "champion"), None, 0)
        self.history: deque[dict[str, Any]] = deque(maxlen=20)
        self.promotions = 0
        self.rollbacks = 0
        self._listeners: tuple[TrialListener, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings, holder: ModelHolder, **kwargs: Any) -> ModelRouter:
        """Build a router from CANARY_MODE, CANARY_SHARE, CANARY_MIN_DECISIONS, CANARY_WINDOW_SEC."""
        return cls(
            holder,
            mode=settings.canary_mode,
            share=settings.canary_share,
            min_decisions=settings.canary_min_decisions,
            window_sec=settings.canary_window_sec,
            **kwargs,
        )

    def subscribe(self, listener: TrialListener) -> Callable[[], None]:
        """Tell `listener` of every promotion, rollback and retired set; return an unsubscribe.

        A retired set goes to every listener and is freed when the last drops it; with
        none subscribed the router drops it itself.
        """
        self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

        return unsubscribe

    # the hot path ---------------------------------------------------------

    def select(self, symbol: str, ts_event: datetime | float) -> tuple[ModelSet, str]:
        """Return the pre-built (model set, variant) that decides this symbol's bar."""
        route = self._route
        champion = route.champion
        if champion[0] is not self.holder.current:  # swapped behind the router's back
            route = self._rebuild()
            champion = route.champion
        challenger = route.challenger
        if challenger is None or route.mode != "canary":
            return champion
        seed = self._seeds.get(symbol)
        if seed is None:
            seed = self._seeds[symbol] = zlib.crc32(symbol.encode())
        ts = int(ts_event.timestamp() if isinstance(ts_event, datetime) else ts_event)
        h = mix64((seed ^ (ts * 0x9E3779B97F4A7C15)) & MASK64) >> 32
        return challenger if h < route.threshold else champion

    def shadow(self) -> ModelSet | None:
        """Return the challenger to score beside the champion (shadow mode only)."""
        route = self._route
        if route.mode != "shadow" or route.challenger is None:
            return None
        return route.challenger[0]

    @property
    def champion(self) -> ModelSet:
        """Return the serving champion."""
        return self.holder.current

    @property
    def challenger(self) -> ModelSet | None:
        """Return the challenger on trial, if any."""
        trial = self._trial
        return trial.models if trial else None

    def _rebuild(self) -> _Route:
        trial = self._trial
        self._route = _Route(
            self.mode,
            (self.holder.current, "champion"),
            (trial.models, "challenger") if trial else None,
            int(self.share * (1 << 32)) if self.share < 1.0 else (1 << 32),
        )
        return self._route

    # trials ---------------------------------------------------------------

    def start_challenger(
        self, models: ModelSet, *, release: str = "", sequence: int | None = None
    ) -> None:
        """Put a verified set on trial (a running trial is superseded)."""
        if self.mode == "off":
            raise RuntimeError("CANARY_MODE=off: swap the holder instead of starting a trial")
        if self._trial is not None:
            self._finish("superseded", f"release {release or models.release} arrived")
        self._trial = _Trial(
            release=release or models.release,
            sequence=sequence,
            models=models,
            started_mono=self._clock(),
            started_at=datetime.now(UTC),
            champion_release=self.holder.current.release,
        )
        self._rebuild()
        log.info(
            "canary: release %s on trial in %s mode against %s",
            self._trial.release,
            self.mode,
            self._trial.champion_release,
        )

    def cancel(self, reason: str) -> None:
        """End a running trial without promoting it (an explicit rollback release arrived)."""
        if self._trial is not None:
            self._finish("cancelled", reason)
            self._rebuild()

    def record_decision(self, signal_id: str, variant: str, *, taken: bool) -> None:
        """Count a decision by the champion or the challenger (canary mode)."""
        trial = self._trial
        if trial is None or self.mode != "canary":
            return
        challenger = variant == "challenger"
        stats = trial.challenger if challenger else trial.champion
        stats.decisions += 1
        if taken:
            stats.taken += 1
            self._remember(trial, signal_id, (not challenger, challenger))
        else:
            stats.resolve(0.0)
        self.tick()

    def record_shadow(
        self,
        champion_signal: str,
        champion_taken: bool,
        shadow_signal: str,
        shadow_taken: bool,
    ) -> None:
        """Count one signal decided by the champion and scored by the shadow challenger.

        `*_signal` is the event id of the candidate each chose; a candidate the champion
        did not take is followed as a counterfactual trade, whose outcome resolves the
        shadow's choice.
        """
        trial = self._trial
        if trial is None or self.mode != "shadow":
            return
        champ, chall = trial.champion, trial.challenger
        champ.decisions += 1
        chall.decisions += 1
        if champion_signal != shadow_signal:
            trial.disagreements += 1
        if champion_taken:
            champ.taken += 1
        else:
            champ.resolve(0.0)
        if shadow_taken:
            chall.taken += 1
        else:
            chall.resolve(0.0)
        if champion_taken and shadow_taken and champion_signal == shadow_signal:
            self._remember(trial, champion_signal, (True, True))
        else:
            if champion_taken:
                self._remember(trial, champion_signal, (True, False))
            if shadow_taken:
                self._remember(trial, shadow_signal, (False, True))
        self.tick()

    def record_outcome(self, signal_id: str, r_multiple: float) -> None:
        """Resolve the decisions waiting for this signal's trade (real or counterfactual)."""
        trial = self._trial
        if trial is None:
            return
        entry = trial.pending.pop(signal_id, None)
        if entry is None:
            return
        if entry[0]:
            trial.champion.resolve(r_multiple)
        if entry[1]:
            trial.challenger.resolve(r_multiple)
        self.tick()

    def _remember(self, trial: _Trial, signal_id: str, entry: tuple[bool, bool]) -> None:
        trial.pending[signal_id] = entry
        if len(trial.pending) > _MAX_PENDING:
            trial.pending.popitem(last=False)

    def tick(self) -> CanaryVerdict | None:
        """Evaluate the running trial; promote or roll back when it is due."""
        trial = self._trial
        if trial is None:
            return None
        elapsed = self._clock() - trial.started_mono
        if trial.challenger.resolved < self.min_decisions and elapsed < self.window_sec:
            return None  # the common case: nothing to decide, nothing built
        verdict = evaluate(
            trial.champion,
            trial.challenger,
            elapsed_s=elapsed,
            min_decisions=self.min_decisions,
            window_sec=self.window_sec,
            tolerance_r=self.tolerance_r,
        )
        if verdict.action == "promote":
            self.promote(verdict.reason)
        elif verdict.action == "rollback":
            self.rollback(verdict.reason)
        return verdict

    def refresh(self) -> None:
        """Re-read the holder after a swap made elsewhere (drops the old set's reference)."""
        self._rebuild()

    def promote(self, reason: str = "promoted by hand") -> None:
        """Make the challenger the champion now (one holder swap)."""
        trial = self._trial
        if trial is None:
            return
        self._retire(self.holder.swap(trial.models))
        self.promotions += 1
        self._finish("promoted", reason)
        self._rebuild()
        log.info("canary: promoted %s over %s (%s)", trial.release, trial.champion_release, reason)
        for listener in self._listeners:
            listener.trial_promoted(trial.models, reason)

    def _retire(self, models: ModelSet) -> None:
        for listener in self._listeners:
            listener.retire(models)

    def rollback(self, reason: str = "rolled back by hand") -> None:
        """Drop the challenger; the champion keeps serving."""
        trial = self._trial
        if trial is None:
            return
        self.rollbacks += 1
        result = self._finish("rolled_back", reason)
        self._rebuild()
        log.warning("canary: rolled back %s (%s)", trial.release, reason)
        for listener in self._listeners:
            listener.trial_rolled_back(result)

    def _finish(self, outcome: str, reason: str) -> dict[str, Any]:
        trial = self._trial
        assert trial is not None
        result = {
            "release": trial.release,
            "sequence": trial.sequence,
            "champion": trial.champion_release,
            "outcome": outcome,
            "reason": reason,
            "mode": self.mode,
            "started_at": trial.started_at.isoformat(),
            "ended_at": datetime.now(UTC).isoformat(),
            "counts": {
                "champion": trial.champion.as_dict(),
                "challenger": trial.challenger.as_dict(),
            },
        }
        self.history.append(result)
        self._trial = None
        if outcome != "promoted":
            self._route = _Route(self.mode, self._route.champion, None, self._route.threshold)
            self._retire(trial.models)
        return result

    # reporting ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Return champion, challenger, mode, shares, counts and the running comparison."""
        trial = self._trial
        champion = self.holder.current
        out: dict[str, Any] = {
            "mode": self.mode,
            "champion": {"release": champion.release, "versions": champion.versions},
            "challenger": None,
            "shares": {"champion": 1.0, "challenger": 0.0},
            "min_decisions": self.min_decisions,
            "window_sec": self.window_sec,
            "tolerance_r": self.tolerance_r,
            "promotions": self.promotions,
            "rollbacks": self.rollbacks,
            "last_result": self.history[-1] if self.history else None,
        }
        if trial is None:
            return out
        share = self.share if self.mode == "canary" else 0.0
        elapsed = self._clock() - trial.started_mono
        ch, cp = trial.challenger.mean_r, trial.champion.mean_r
        verdict = evaluate(
            trial.champion,
            trial.challenger,
            elapsed_s=elapsed,
            min_decisions=self.min_decisions,
            window_sec=self.window_sec,
            tolerance_r=self.tolerance_r,
        )
        out.update(
            challenger={
                "release": trial.release,
                "sequence": trial.sequence,
                "versions": trial.models.versions,
                "started_at": trial.started_at.isoformat(),
                "elapsed_s": round(elapsed, 3),
                "shadow": self.mode == "shadow",
            },
            shares={"champion": 1.0 - share, "challenger": share},
            counts={
                "champion": trial.champion.as_dict(),
                "challenger": trial.challenger.as_dict(),
                "pending": len(trial.pending),
                "disagreements": trial.disagreements,
            },
            comparison={
                "metric": "mean R per resolved decision",
                "champion_mean_r": cp,
                "challenger_mean_r": ch,
                "difference_r": None if ch is None or cp is None else round(ch - cp, 6),
                "verdict_now": verdict.action,
                "reason": verdict.reason,
            },
        )
        return out
