"""The serving path replayed over a holdout: choose, veto, size; and paired tests on it.

Per decision point (a bar's candidates of one symbol) the trader chooses the
candidate whose strategy the meta model rates highest, or with no meta model the
first in `RULE_PRIORITY`; skips it when the execution model predicts an R at or
below `min_predicted_r`; and sizes it with the sizer (1.0 without one). The
result per decision point is the sized R it earned (0 when skipped), so two model
sets replayed over the same holdout give paired samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from infra.contracts import RULE_PRIORITY, STRATEGIES

__all__ = ["PairedTest", "Path", "chosen_signals", "paired_test", "replay", "signal_meta_prob"]

_RANK = {s: i for i, s in enumerate(RULE_PRIORITY)}
_INDEX = {s: i for i, s in enumerate(STRATEGIES)}
SizerFn = Callable[[np.ndarray], np.ndarray]


def signal_meta_prob(
    signals: pd.DataFrame, groups: pd.DataFrame, proba: np.ndarray | None
) -> np.ndarray:
    """Return each signal's probability for its own strategy (1/candidates without a model)."""
    if proba is None:
        sizes = signals.groupby("group")["group"].transform("size").to_numpy(dtype=np.float64)
        return 1.0 / sizes
    pos = pd.Series(np.arange(len(groups)), index=groups["group"].to_numpy())
    rows = pos.loc[signals["group"].to_numpy()].to_numpy()
    cols = signals["strategy"].map(_INDEX).to_numpy()
    return np.asarray(proba, dtype=np.float64)[rows, cols]


def chosen_signals(
    signals: pd.DataFrame, groups: pd.DataFrame, proba: np.ndarray | None
) -> np.ndarray:
    """Return the position (in `signals`) of the candidate chosen at each decision point."""
    if proba is None:
        score = -signals["strategy"].map(_RANK).to_numpy(dtype=np.float64)
    else:
        score = signal_meta_prob(signals, groups, proba)
    group = signals["group"].to_numpy()
    order = np.lexsort((np.arange(len(group)), -score, group))
    first = np.r_[True, group[order][1:] != group[order][:-1]]
    return order[first]


@dataclass(frozen=True)
class Path:
    """A replayed holdout: the sized R per decision point and what produced it."""

    sized_r: np.ndarray
    chosen_r: np.ndarray
    taken: np.ndarray

    def summary(self) -> dict[str, float]:
        """Return mean chosen R, mean and total sized R, trades taken."""
        n = max(1, len(self.sized_r))
        return {
            "chosen_r": float(np.mean(self.chosen_r)) if len(self.chosen_r) else 0.0,
            "sized_r_mean": float(np.sum(self.sized_r)) / n,
            "sized_r_total": float(np.sum(self.sized_r)),
            "trades": float(np.sum(self.taken)),
        }


def replay(
    signals: pd.DataFrame,
    groups: pd.DataFrame,
    *,
    proba: np.ndarray | None,
    predicted_r: np.ndarray | None,
    sizer: SizerFn | None,
    obs: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    min_predicted_r: float = 0.0,
) -> Path:
    """Replay one model set (None: the family's rule) over holdout decision points.

    `obs(rows, meta_prob, predicted_r)` builds sizer observations for signal positions.
    """
    rows = chosen_signals(signals, groups, proba)
    r = signals["r_multiple"].to_numpy(dtype=np.float64)[rows]
    meta_prob = signal_meta_prob(signals, groups, proba)[rows]
    pred = None if predicted_r is None else np.asarray(predicted_r, np.float64).reshape(-1)[rows]
    taken = np.ones(len(rows), dtype=bool) if pred is None else pred > min_predicted_r
    size = np.ones(len(rows))
    if sizer is not None and len(rows):
        x = obs(rows, meta_prob, np.zeros(len(rows)) if pred is None else pred)
        size = np.asarray(sizer(x), dtype=np.float64).reshape(-1)
    return Path(sized_r=np.where(taken, size * r, 0.0), chosen_r=r, taken=taken)


@dataclass(frozen=True)
class PairedTest:
    """A one-sided paired test that `a` earns more than `b` per decision point."""

    name: str
    p_value: float
    mean_diff: float
    n: int


def paired_test(
    a: np.ndarray, b: np.ndarray, method: str = "paired_t", draws: int = 4000, seed: int = 7
) -> PairedTest:
    """Test H1: mean(a - b) > 0 with a one-sided paired t-test or a paired bootstrap."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    mean = float(np.mean(d)) if n else 0.0
    if n < 2 or float(np.std(d)) == 0.0:
        return PairedTest(method, 0.0 if mean > 0 else 1.0, mean, n)
    if method == "paired_t":
        p = float(stats.ttest_1samp(d, 0.0, alternative="greater").pvalue)
    elif method == "bootstrap":
        rng = np.random.default_rng(seed)
        below, left = 0, draws
        while left > 0:  # chunks keep the index matrix small
            k = min(left, max(1, 2_000_000 // n))
            below += int(np.sum(d[rng.integers(0, n, size=(k, n))].mean(axis=1) <= 0.0))
            left -= k
        p = float((below + 1) / (draws + 1))
    else:
        raise ValueError(f"unknown gate test {method!r} (paired_t or bootstrap)")
    return PairedTest(method, min(1.0, max(0.0, p)), mean, n)
