"""What a training run produced before the gate: a challenger per family and its holdout."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from training import export as ex
from training.datasets import TrainingData

__all__ = ["FamilyResult", "TrainedSet"]


@dataclass
class FamilyResult:
    """A trained challenger: its export, holdout scores and metrics per fold."""

    family: str
    exported: ex.Exported
    holdout_metrics: dict[str, float]
    fold_metrics: list[dict[str, float]]
    model: Any
    holdout_scores: np.ndarray


@dataclass
class TrainedSet:
    """Everything `fit_all` produced (before the gate)."""

    data: TrainingData
    meta: FamilyResult
    exec: FamilyResult
    sizer: FamilyResult
    holdout_start: dt.datetime
    timings_s: dict[str, float] = field(default_factory=dict)
    holdout_groups: pd.DataFrame | None = None
    holdout_signals: pd.DataFrame | None = None
