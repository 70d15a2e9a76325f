"""The independent fits of a training run, as plain functions an executor can run anywhere.

Each takes the whole input matrices (shared once per run) and the boolean masks
of its fold, and returns the fitted model, its out-of-sample output and the
seconds it took. The results do not depend on where they ran.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from training import export as ex
from training import models as md
from training.config import TrainConfig

__all__ = ["fit_exec_fold", "fit_meta_fold", "fit_sizer"]


def fit_meta_fold(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    cfg: TrainConfig,
) -> tuple[Any, np.ndarray, float]:
    """Fit the meta classifier on `train` rows; return it, its probabilities on `test`, seconds."""
    t0 = time.perf_counter()
    model = md.fit_meta(x[train], y[train], w[train], cfg)
    # threads add the trees' probabilities in any order; one thread gives the same bits anywhere
    jobs = model.n_jobs
    model.set_params(n_jobs=1)
    proba = ex.meta_native_proba(model, x[test])
    model.set_params(n_jobs=jobs)
    return model, proba, time.perf_counter() - t0


def fit_exec_fold(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    cfg: TrainConfig,
) -> tuple[Any, np.ndarray, float]:
    """Fit the exec regressor on `train` rows; return it, its predictions on `test`, seconds."""
    t0 = time.perf_counter()
    model = md.fit_exec(x[train], y[train], w[train], cfg)
    return model, model.predict(x[test]), time.perf_counter() - t0


def fit_sizer(obs: np.ndarray, r: np.ndarray, cfg: TrainConfig) -> tuple[Any, float]:
    """Train the PPO sizer; return it and seconds."""
    from training.sizer import train_sizer

    t0 = time.perf_counter()
    model = train_sizer(obs, r, cfg)
    return model, time.perf_counter() - t0
