"""Hyperparameter search: an Optuna study per model family on the walk-forward objective.

Each family's study lives in `OPTUNA_STORAGE` (a PostgreSQL URL lets several
machines add trials to one study) or, by default, SQLite in the tradeloop home.
The objective never sees the gated holdout: it is scored on the walk-forward
folds before it (purged and embargoed as in training):

- meta: mean log loss of the folds (minimised);
- exec: mean MAE of predicted R of the folds (minimised);
- sizer: trained on the earlier two thirds of the folds' out-of-sample
  observations, the Sharpe of sized R on the last third (maximised).

`write_profile` stores the best parameters as the training profile that
`TRAIN_PARAMS_FILE` points the trainer at; each release records the values it used.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna

from infra.settings import Settings
from training import models as md
from training.config import HYPERPARAMETERS, DataError, TrainConfig
from training.datasets import TrainingData
from training.executor import Executor, LocalExecutor
from training.fold_fits import fit_exec_fold, fit_meta_fold
from training.paths import signal_meta_prob
from training.walk_forward import Fold, folds

__all__ = [
    "DIRECTIONS",
    "Prepared",
    "StudyResult",
    "load_data",
    "objective",
    "open_storage",
    "prepare",
    "storage_url",
    "trial_value",
    "tune",
    "write_profile",
]

log = logging.getLogger(__name__)

#: The direction of each family's objective.
DIRECTIONS: dict[str, Literal["minimize", "maximize"]] = {
    "meta": "minimize",
    "exec": "minimize",
    "sizer": "maximize",
}
Objective = Callable[[optuna.Trial], float]


def storage_url(settings: Settings) -> str:
    """Return the Optuna storage URL: `OPTUNA_STORAGE` or SQLite in the home."""
    url = settings.optuna_storage.get_secret_value()
    if url:
        return url
    settings.home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{settings.home / 'optuna.db'}"


def open_storage(url: str, attempts: int = 3) -> optuna.storages.BaseStorage:
    """Open an Optuna storage; workers racing to create its tables retry once they exist."""
    import sqlalchemy.exc

    if not url.startswith(("postgresql", "mysql", "sqlite")):
        raise ValueError(f"OPTUNA_STORAGE: unsupported storage {url.split(':', 1)[0]!r}")
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            log.info("optuna storage: another worker is creating the tables; retrying")
    raise AssertionError("unreachable")


def _space(family: str, trial: optuna.Trial) -> dict[str, Any]:
    """Suggest one family's parameters (the names of `HYPERPARAMETERS[family]`)."""
    if family == "meta":
        return {
            "meta_trees": trial.suggest_int("meta_trees", 8, 200, log=True),
            "meta_max_depth": trial.suggest_int("meta_max_depth", 2, 12),
            "meta_min_leaf": trial.suggest_int("meta_min_leaf", 2, 60, log=True),
            "meta_max_samples": trial.suggest_float("meta_max_samples", 0.2, 1.0),
        }
    if family == "exec":
        return {
            "exec_trees": trial.suggest_int("exec_trees", 10, 300, log=True),
            "exec_max_depth": trial.suggest_int("exec_max_depth", 1, 5),
            "exec_learning_rate": trial.suggest_float("exec_learning_rate", 0.01, 0.3, log=True),
            "exec_subsample": trial.suggest_float("exec_subsample", 0.3, 1.0),
            "exec_max_features": trial.suggest_float("exec_max_features", 0.2, 1.0),
        }
    if family == "sizer":
        return {
            "sizer_timesteps": trial.suggest_int("sizer_timesteps", 256, 20_000, log=True),
            "sizer_dd_penalty": trial.suggest_float("sizer_dd_penalty", 0.0, 2.0),
            "sizer_size_penalty": trial.suggest_float("sizer_size_penalty", 0.0, 0.2),
        }
    raise ValueError(f"unknown model family {family!r} (one of {tuple(HYPERPARAMETERS)})")


def _tuning_folds(data: TrainingData, cfg: TrainConfig) -> list[Fold]:
    """Return the walk-forward folds before the gated holdout."""
    return folds(data.groups, data.signals, cfg.folds, cfg.embargo_min)[:-1]


def _sizer_rows(
    data: TrainingData, cfg: TrainConfig, splits: list[Fold], run: Executor
) -> tuple[Any, Any]:
    """Return time-ordered out-of-sample sizer observations and their R (base models)."""
    from training.pipeline import sizer_obs

    g, s = data.groups, data.signals
    xm, ym, wm = data.meta_matrix(), g["label"].to_numpy(), g["weight"].to_numpy(np.float64)
    xe, ye = data.exec_matrix(), s["r_multiple"].to_numpy(np.float64)
    we = s["weight"].to_numpy(np.float64)
    shared_m = [run.share(a) for a in (xm, ym, wm)]
    shared_e = [run.share(a) for a in (xe, ye, we)]
    pending = []
    for fold in splits:
        pending.append(run.submit(fit_meta_fold, *shared_m, fold.g_train, fold.g_test, cfg))
        pending.append(run.submit(fit_exec_fold, *shared_e, fold.s_train, fold.s_test, cfg))
    fits = run.gather(pending)
    obs, rs = [], []
    for k, fold in enumerate(splits):
        (_, proba, _), (_, pred, _) = fits[2 * k], fits[2 * k + 1]
        st, gt = s[fold.s_test], g[fold.g_test]
        obs.append(sizer_obs(st, signal_meta_prob(st, gt, proba), pred))
        rs.append(ye[fold.s_test])
    return np.concatenate(obs), np.concatenate(rs)


@dataclass(frozen=True)
class Prepared:
    """What every trial of one family's study reads: its inputs and the folds."""

    family: str
    cfg: TrainConfig
    x: Any = None
    y: Any = None
    w: Any = None
    masks: tuple[tuple[Any, Any], ...] = ()  # (train, test) per fold


def prepare(
    family: str, data: TrainingData, cfg: TrainConfig, executor: Executor | None = None
) -> Prepared:
    """Return the inputs of a family's trials (the sizer's base-model fits run on `executor`)."""
    splits = _tuning_folds(data, cfg)
    g, s = data.groups, data.signals
    if family == "sizer":
        obs, r = _sizer_rows(data, cfg, splits, executor or LocalExecutor())
        cut = int(len(obs) * 2 / 3)
        if cut < 2 or len(obs) - cut < 2:
            raise DataError(f"sizer tuning: {len(obs)} out-of-sample signals are too few")
        return Prepared(family, cfg, obs, r, None, ((slice(0, cut), slice(cut, None)),))
    if family == "meta":
        x, y, w = data.meta_matrix(), g["label"].to_numpy(), g["weight"].to_numpy(np.float64)
        return Prepared(family, cfg, x, y, w, tuple((f.g_train, f.g_test) for f in splits))
    if family == "exec":
        x, y = data.exec_matrix(), s["r_multiple"].to_numpy(np.float64)
        w = s["weight"].to_numpy(np.float64)
        return Prepared(family, cfg, x, y, w, tuple((f.s_train, f.s_test) for f in splits))
    raise ValueError(f"unknown model family {family!r} (one of {tuple(HYPERPARAMETERS)})")


def trial_value(prep: Prepared, params: dict[str, Any]) -> float:
    """Return the objective of one trial's parameters on the prepared folds."""
    cfg = replace(prep.cfg, **params)
    if prep.family == "sizer":
        from training.sizer import train_sizer

        ((train, test),) = prep.masks
        model = train_sizer(prep.x[train], prep.y[train], cfg)
        size = model.predict_size(prep.x[test]).reshape(-1)
        return md.sizer_metrics(size, prep.y[test])["sharpe_sized"]
    values = []
    for train, test in prep.masks:
        if prep.family == "meta":
            _, proba, _ = fit_meta_fold(prep.x, prep.y, prep.w, train, test, cfg)
            values.append(md.meta_metrics(proba, prep.y[test])["log_loss"])
        else:
            model = md.fit_exec(prep.x[train], prep.y[train], prep.w[train], cfg)
            values.append(md.exec_metrics(model.predict(prep.x[test]), prep.y[test])["mae"])
    return float(np.mean(values))


def _trial_task(prep: Prepared, params: dict[str, Any]) -> tuple[float, str]:
    """Run one trial; return its value, or NaN and the message of a DataError."""
    try:
        return trial_value(prep, params), ""
    except DataError as exc:
        return float("nan"), str(exc)


def objective(family: str, data: TrainingData, cfg: TrainConfig) -> Objective:
    """Return the walk-forward objective of one family's study."""
    prep = prepare(family, data, cfg)
    return lambda trial: trial_value(prep, _space(family, trial))


@dataclass(frozen=True)
class StudyResult:
    """The best trial of one family's study (over every worker's trials)."""

    family: str
    study: str
    value: float
    params: dict[str, float]
    trials: int


def tune(
    settings: Settings,
    data: TrainingData,
    cfg: TrainConfig,
    *,
    families: Sequence[str] = tuple(HYPERPARAMETERS),
    n_trials: int = 20,
    study_prefix: str = "tradeloop",
    timeout_s: float | None = None,
    worker: str = "",
    executor: Executor | None = None,
    parallel: int | None = None,
) -> list[StudyResult]:
    """Run (or join) one study per family and return each study's best trial.

    Trials run `parallel` at a time (default: as many as `executor` runs at once)
    as tasks of `executor`; this process asks the sampler and tells the storage.
    The same seed and `parallel` give the same trials on any executor.
    """
    run = executor or LocalExecutor()
    batch = max(1, parallel or run.slots())
    storage = open_storage(storage_url(settings))
    out = []
    for family in families:
        if family not in HYPERPARAMETERS:
            raise ValueError(f"unknown model family {family!r} (one of {tuple(HYPERPARAMETERS)})")
        name = f"{study_prefix}-{family}"
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction=DIRECTIONS[family],
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=cfg.seed + zlib.crc32(worker.encode())),
        )
        if worker:
            study.set_user_attr(f"worker_{worker}", True)
        prep = run.share(prepare(family, data, cfg, run))
        _optimize(study, family, prep, run, n_trials, batch, timeout_s, worker)
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not done:
            raise DataError(f"study {name}: no trial completed")
        best = study.best_trial
        assert best.value is not None
        log.info("study %s: best %.5f after %d trials", name, best.value, len(done))
        out.append(StudyResult(family, name, float(best.value), dict(best.params), len(done)))
    return out


def _optimize(
    study: optuna.Study,
    family: str,
    prep: Any,
    run: Executor,
    n_trials: int,
    batch: int,
    timeout_s: float | None,
    worker: str,
) -> None:
    """Ask `batch` trials at a time, evaluate them on `run`, tell their values in order."""
    t0 = time.monotonic()
    started = 0
    while started < n_trials and (timeout_s is None or time.monotonic() - t0 < timeout_s):
        trials = [study.ask() for _ in range(min(batch, n_trials - started))]
        started += len(trials)
        pending = []
        for trial in trials:
            trial.set_user_attr("worker", worker)
            pending.append(run.submit(_trial_task, prep, _space(family, trial)))
        for trial, (value, error) in zip(trials, run.gather(pending), strict=True):
            if error:
                log.warning("trial %d of %s failed: %s", trial.number, study.study_name, error)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, value)


def write_profile(
    path: str | Path, results: Sequence[StudyResult], base: Path | None = None
) -> Path:
    """Write (or update) the training profile with the best parameters per family."""
    target = Path(path)
    doc: dict[str, Any] = {"params": {}, "studies": {}}
    source = base or target
    if source.exists():
        doc = json.loads(source.read_text())
        doc.setdefault("params", {})
        doc.setdefault("studies", {})
    for r in results:
        doc["params"][r.family] = r.params
        doc["studies"][r.family] = {"study": r.study, "value": r.value, "trials": r.trials}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(doc, indent=2, sort_keys=True))
    return target


def load_data(
    settings: Settings,
    cfg: TrainConfig,
    *,
    symbols: Sequence[str] | None = None,
    start: Any = None,
    pit_engine: Any = None,
    executor: Executor | None = None,
) -> TrainingData:
    """Collect the sources training would use and build the point-in-time dataset."""
    import tempfile

    from training.datasets import build_training_data
    from training.sources import collect_sources

    vendor = [p.strip() for p in settings.train_vendor_data.split(",") if p.strip()]
    with tempfile.TemporaryDirectory(prefix="tradeloop-tune-") as work:
        lakes = collect_sources(
            settings,
            Path(work),
            start=start,
            end=None,
            symbols=symbols,
            vendor_paths=vendor,
            synthetic_bars=settings.train_synthetic_bars,
        )
        return build_training_data(
            lakes, cfg, pit_engine or settings.train_pit_engine, executor=executor
        )
