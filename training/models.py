"""The meta classifier (RandomForest) and execution-quality regressor (GradientBoosting).

Both fit on float32 matrices laid out by `features.vectors.MODEL_FEATURES` with a
sample weight per row (the per-source weights), capped to the most recent
`*_max_rows` rows of their training window.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.metrics import log_loss, mean_absolute_error, roc_auc_score

from features.trade_stats import max_drawdown, sharpe_ratio
from infra.contracts import STRATEGIES
from training.config import DataError, TrainConfig

__all__ = [
    "exec_metrics",
    "fit_exec",
    "fit_meta",
    "meta_metrics",
    "recent",
    "sharpe",
    "sizer_metrics",
]

_EPS = 1e-6


def recent(n_rows: int, cap: int) -> slice:
    """Return the slice of the most recent `cap` rows of a time-ordered window."""
    return slice(max(0, n_rows - cap), n_rows)


def fit_meta(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, cfg: TrainConfig, n_jobs: int = 2
) -> RandomForestClassifier:
    """Fit the strategy classifier on labels in `STRATEGIES` (strings)."""
    cut = recent(len(x), cfg.meta_max_rows)
    x, y, w = x[cut], y[cut], w[cut]
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise DataError(
            f"meta: the training window has one class only ({classes}); "
            "need at least two strategies with outcomes"
        )
    model = RandomForestClassifier(
        n_estimators=cfg.meta_trees,
        max_depth=cfg.meta_max_depth,
        min_samples_leaf=cfg.meta_min_leaf,
        max_features="sqrt",
        class_weight=None,
        max_samples=cfg.meta_max_samples if len(y) >= 100 else None,
        n_jobs=n_jobs,
        random_state=cfg.seed,
    )
    model.fit(x, y, sample_weight=w)
    return model


def fit_exec(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, cfg: TrainConfig
) -> GradientBoostingRegressor:
    """Fit the R-multiple regressor (Huber loss: R has fat tails)."""
    cut = recent(len(x), cfg.exec_max_rows)
    model = GradientBoostingRegressor(
        loss="huber",
        n_estimators=cfg.exec_trees,
        max_depth=cfg.exec_max_depth,
        learning_rate=cfg.exec_learning_rate,
        subsample=cfg.exec_subsample,
        max_features=cfg.exec_max_features,
        min_samples_leaf=20 if cfg.profile == "standard" else 5,
        random_state=cfg.seed,
    )
    model.fit(x[cut], y[cut], sample_weight=w[cut])
    return model


def meta_metrics(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Return log loss, macro one-vs-rest AUC and accuracy of [N, 4] probabilities."""
    y_idx = np.array([STRATEGIES.index(str(v)) for v in y])
    p = np.clip(np.asarray(proba, dtype=np.float64), _EPS, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    ll = float(log_loss(y_idx, p, labels=list(range(len(STRATEGIES)))))
    aucs = []
    for k in range(len(STRATEGIES)):
        pos = y_idx == k
        if 0 < pos.sum() < len(y_idx):
            aucs.append(float(roc_auc_score(pos, p[:, k])))
    auc = float(np.mean(aucs)) if aucs else 0.5
    acc = float(np.mean(np.argmax(p, axis=1) == y_idx))
    return {"log_loss": ll, "auc": auc, "accuracy": acc, "rows": float(len(y_idx))}


def exec_metrics(pred: np.ndarray, y: np.ndarray, mean_r: float | None = None) -> dict[str, float]:
    """Return MAE, baseline MAEs and the rank correlation of predicted R.

    `mae_baseline` predicts the holdout's own median (a hindsight floor);
    `mae_mean_predictor` predicts `mean_r`, the training window's mean R (the gate's
    trivial baseline), and is left out when `mean_r` is None.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    mae = float(mean_absolute_error(y, pred))
    base = float(mean_absolute_error(y, np.full_like(y, np.median(y))))
    extra = {} if mean_r is None else {"mae_mean_predictor": float(np.mean(np.abs(y - mean_r)))}
    corr = 0.0
    if len(y) > 2 and np.std(pred) > 0 and np.std(y) > 0:
        rp = np.argsort(np.argsort(pred))
        ry = np.argsort(np.argsort(y))
        corr = float(np.corrcoef(rp, ry)[0, 1])
    return {"mae": mae, "mae_baseline": base, **extra, "spearman": corr, "rows": float(len(y))}


def sharpe(r: np.ndarray) -> float:
    """Return the per-trade Sharpe ratio (mean / std) of R-multiples (0 if flat)."""
    return sharpe_ratio(r) or 0.0


def sizer_metrics(size: np.ndarray, r: np.ndarray) -> dict[str, float]:
    """Return the Sharpe of sized R against fixed size 1.0 and the drawdowns."""
    size = np.asarray(size, dtype=np.float64).reshape(-1)
    r = np.asarray(r, dtype=np.float64).reshape(-1)
    sized = size * r
    s_sized, s_fixed = sharpe(sized), sharpe(r)
    return {
        "sharpe_sized": s_sized,
        "sharpe_fixed": s_fixed,
        "sharpe_uplift": s_sized - s_fixed,
        "mean_size": float(np.mean(size)) if len(size) else 0.0,
        "total_r_sized": float(np.sum(sized)),
        "total_r_fixed": float(np.sum(r)),
        "max_dd_sized": max_drawdown(sized),
        "max_dd_fixed": max_drawdown(r),
        "rows": float(len(r)),
    }
