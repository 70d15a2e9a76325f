"""The arithmetic of a canary trial: per-variant counts, the verdict, the stable route hash.

Pure functions and values, no state: `trader.delivery.canary.ModelRouter` runs the trial.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

__all__ = [
    "DEFAULT_TOLERANCE_R",
    "MASK64",
    "CanaryVerdict",
    "VariantStats",
    "evaluate",
    "mix64",
    "route_fraction",
]

MASK64 = (1 << 64) - 1
DEFAULT_TOLERANCE_R = 0.05


@dataclass(slots=True)
class VariantStats:
    """What one variant did during a trial."""

    decisions: int = 0
    taken: int = 0
    resolved: int = 0
    wins: int = 0
    sum_r: float = 0.0

    @property
    def mean_r(self) -> float | None:
        """Return the mean R per resolved decision, or None before any resolved."""
        return self.sum_r / self.resolved if self.resolved else None

    def resolve(self, r: float) -> None:
        """Add one resolved decision worth `r`."""
        self.resolved += 1
        self.sum_r += r
        if r > 0:
            self.wins += 1

    def as_dict(self) -> dict[str, Any]:
        """Return the counts and mean R."""
        out = asdict(self)
        out["sum_r"] = round(self.sum_r, 6)
        mean = self.mean_r
        out["mean_r"] = None if mean is None else round(mean, 6)
        return out


class CanaryVerdict(NamedTuple):
    """`wait`, `promote` or `rollback`, and why."""

    action: Literal["wait", "promote", "rollback"]
    reason: str


def evaluate(
    champion: VariantStats,
    challenger: VariantStats,
    *,
    elapsed_s: float,
    min_decisions: int,
    window_sec: float,
    tolerance_r: float = DEFAULT_TOLERANCE_R,
) -> CanaryVerdict:
    """Decide a trial: wait until N resolved decisions or the window, then compare mean R.

    With no resolved champion decision the baseline is 0 R (flat); with no resolved
    challenger decision at the end of the window there is no evidence against it.
    """
    by_count = challenger.resolved >= min_decisions
    by_time = elapsed_s >= window_sec
    if not (by_count or by_time):
        return CanaryVerdict(
            "wait",
            f"{challenger.resolved}/{min_decisions} resolved, {elapsed_s:.0f}/{window_sec:.0f}s",
        )
    when = f"after {challenger.resolved} resolved decisions" if by_count else "window elapsed"
    ch_mean = challenger.mean_r
    if ch_mean is None:
        return CanaryVerdict("promote", f"{when}; no resolved challenger decision, none worse")
    base = champion.mean_r if champion.mean_r is not None else 0.0
    if ch_mean >= base - tolerance_r:
        return CanaryVerdict(
            "promote",
            f"{when}; challenger mean R {ch_mean:.4f} >= champion {base:.4f} - {tolerance_r}",
        )
    return CanaryVerdict(
        "rollback",
        f"{when}; challenger mean R {ch_mean:.4f} < champion {base:.4f} - {tolerance_r}",
    )


def mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def route_fraction(symbol: str, ts_s: int) -> float:
    """Return a stable number in [0, 1) for a symbol and a bar time in epoch seconds."""
    seed = zlib.crc32(symbol.encode())
    return (mix64((seed ^ (ts_s * 0x9E3779B97F4A7C15)) & MASK64) >> 32) / float(1 << 32)
