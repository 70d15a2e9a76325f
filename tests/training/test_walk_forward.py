"""Purged, embargoed walk-forward splits: a label that crosses a fold boundary is caught."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.config import DataError
from training.walk_forward import LabelLeakError, check_purged, cuts, folds, purged_train

T0 = pd.Timestamp("2025-01-06 14:30", tz="UTC")


def _frame(n: int, hold_min: float = 5.0) -> pd.DataFrame:
    """One row a minute; each label closes `hold_min` minutes after its decision."""
    ts = pd.Series([T0 + pd.Timedelta(minutes=i) for i in range(n)])
    return pd.DataFrame(
        {
            "event_timestamp": ts,
            "exit_ts": ts + pd.Timedelta(minutes=hold_min),
            "group": np.arange(n),
        }
    )


def test_a_label_spanning_the_fold_boundary_is_purged_and_a_naive_split_is_caught() -> None:
    frame = _frame(300, hold_min=0.5)
    start = cuts(frame["event_timestamp"], 2)[0]
    # construct the leak: a signal decided an hour before the cut that exits after it
    leak = frame.index[frame["event_timestamp"] == start - pd.Timedelta(minutes=60)][0]
    frame.loc[leak, "exit_ts"] = start + pd.Timedelta(minutes=30)
    naive = (frame["event_timestamp"] < start).to_numpy()
    with pytest.raises(LabelLeakError, match="1 training labels overlap") as err:
        check_purged(frame, naive, start, pd.Timedelta(0))
    assert str(frame.loc[leak, "exit_ts"]) in str(err.value)
    purged = purged_train(frame, start, pd.Timedelta(0))
    assert not purged[leak] and purged[leak - 1] and purged.sum() == naive.sum() - 1
    check_purged(frame, purged, start, pd.Timedelta(0))
    # the folds purge it too, and every training label closes before its test fold
    for fold in folds(frame, frame, 2, embargo_min=0.0):
        assert not (fold.g_train & fold.g_test).any()
        assert (frame.loc[fold.g_train, "exit_ts"] < fold.test_start).all()
        if fold.test_start > frame.loc[leak, "exit_ts"]:
            assert fold.g_train[leak]  # a later fold may train on it: its label is known
        else:
            assert not fold.g_train[leak]


def test_the_embargo_drops_labels_closing_just_before_the_test_fold() -> None:
    frame = _frame(300, hold_min=5.0)
    start = cuts(frame["event_timestamp"], 2)[0]
    no_gap = purged_train(frame, start, pd.Timedelta(0))
    gap = purged_train(frame, start, pd.Timedelta(minutes=10))
    # labels close 5 minutes after decision: the 10-minute embargo removes 10 more rows
    assert no_gap.sum() - gap.sum() == 10
    last = frame.loc[gap, "exit_ts"].max()
    assert last < start - pd.Timedelta(minutes=10)
    with pytest.raises(LabelLeakError, match="embargo"):
        check_purged(frame, no_gap, start, pd.Timedelta(minutes=10))
    # `lo` keeps only rows decided from it on (the sizer's out-of-sample blocks)
    lo = frame["event_timestamp"].iloc[50]
    assert purged_train(frame, start, pd.Timedelta(0), lo=lo).sum() == no_gap.sum() - 50


def test_folds_refuse_a_window_too_short_for_the_embargo() -> None:
    frame = _frame(40, hold_min=1.0)
    with pytest.raises(DataError, match="too few rows"):
        folds(frame, frame, 2, embargo_min=600.0)
    with pytest.raises(DataError, match="at least 2 folds"):
        folds(frame, frame, 1, embargo_min=0.0)
