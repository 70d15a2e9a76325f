"""Purged, embargoed walk-forward splits over time-ordered labelled rows.

Decision points are cut by time into `folds + 1` blocks. Fold k tests on block k
and trains on rows whose label is known before the block starts: a label spans
entry (`event_timestamp`) to exit (`exit_ts`), so a row whose exit reaches into
the test block, or into the embargo window just before it, is purged from
training. The last block is the gated holdout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.config import DataError

__all__ = ["Fold", "LabelLeakError", "block_mask", "check_purged", "cuts", "folds", "purged_train"]


class LabelLeakError(DataError):
    """Raise when a training label overlaps its test fold (or the embargo before it)."""


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: boolean masks over the groups and the signals."""

    number: int
    test_start: pd.Timestamp
    test_end: pd.Timestamp | None
    g_train: np.ndarray
    g_test: np.ndarray
    s_train: np.ndarray
    s_test: np.ndarray


def cuts(ts: pd.Series, n_folds: int) -> list[pd.Timestamp]:
    """Return the start times of blocks 1..n_folds (quantiles of the decision times)."""
    values = np.sort(ts.to_numpy())
    out = []
    for k in range(1, n_folds + 1):
        out.append(pd.Timestamp(values[min(len(values) - 1, int(len(values) * k / (n_folds + 1)))]))
    if len(set(out)) != len(out) or out[0] <= pd.Timestamp(values[0]):
        raise DataError(
            f"the window is too short for {n_folds} walk-forward folds "
            f"({len(values)} decision points between {values[0]} and {values[-1]})"
        )
    return out


def block_mask(ts: pd.Series, lo: pd.Timestamp, hi: pd.Timestamp | None) -> np.ndarray:
    """Return the mask of rows decided in [lo, hi) (hi None: to the end)."""
    mask = ts >= lo
    if hi is not None:
        mask &= ts < hi
    return mask.to_numpy()


def purged_train(
    frame: pd.DataFrame,
    test_start: pd.Timestamp,
    embargo: pd.Timedelta,
    lo: pd.Timestamp | None = None,
) -> np.ndarray:
    """Return the mask of rows decided (from `lo`) before `test_start` whose label closed
    before `test_start - embargo`."""
    ts, exit_ts = frame["event_timestamp"], frame["exit_ts"]
    mask = (ts < test_start) & (exit_ts < test_start - embargo)
    if lo is not None:
        mask &= ts >= lo
    return mask.to_numpy()


def check_purged(
    frame: pd.DataFrame, train: np.ndarray, test_start: pd.Timestamp, embargo: pd.Timedelta
) -> None:
    """Raise `LabelLeakError` if a training row's label reaches the test fold or its embargo."""
    exits = frame.loc[train, "exit_ts"]
    leaking = exits >= test_start - embargo
    if leaking.any():
        first = frame.loc[train].loc[leaking.to_numpy()].iloc[0]
        raise LabelLeakError(
            f"{int(leaking.sum())} training labels overlap the fold starting {test_start} "
            f"(embargo {embargo}): e.g. the row decided {first['event_timestamp']} "
            f"exits {first['exit_ts']}"
        )


def folds(
    groups: pd.DataFrame, signals: pd.DataFrame, n_folds: int, embargo_min: float
) -> list[Fold]:
    """Return the purged, embargoed walk-forward folds (the last tests on the holdout)."""
    if n_folds < 2:
        raise DataError(
            "walk-forward needs at least 2 folds (the sizer trains on fold 1's test block)"
        )
    starts = cuts(groups["event_timestamp"], n_folds)
    bounds: list[pd.Timestamp | None] = [*starts, None]
    embargo = pd.Timedelta(minutes=embargo_min)
    out = []
    for k in range(n_folds):
        lo, hi = starts[k], bounds[k + 1]
        fold = Fold(
            number=k + 1,
            test_start=lo,
            test_end=hi,
            g_train=purged_train(groups, lo, embargo),
            g_test=block_mask(groups["event_timestamp"], lo, hi),
            s_train=purged_train(signals, lo, embargo),
            s_test=block_mask(signals["event_timestamp"], lo, hi),
        )
        check_purged(groups, fold.g_train, lo, embargo)
        check_purged(signals, fold.s_train, lo, embargo)
        if (
            fold.g_train.sum() < 2
            or fold.g_test.sum() < 1
            or fold.s_train.sum() < 2
            or fold.s_test.sum() < 1
        ):
            raise DataError(
                f"fold {k + 1}: too few rows (train {int(fold.g_train.sum())} decision points / "
                f"{int(fold.s_train.sum())} signals, test {int(fold.g_test.sum())} / "
                f"{int(fold.s_test.sum())})"
            )
        out.append(fold)
    return out
