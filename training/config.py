"""Training knobs: model sizes per profile, source weights, and the run's typed errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

from infra.settings import Settings

__all__ = [
    "HYPERPARAMETERS",
    "SOURCES",
    "DataError",
    "ExportError",
    "ReleaseError",
    "TrainConfig",
    "TrainingError",
    "load_params",
    "parse_weights",
]

#: The data sources of the seed design, in merge order.
SOURCES: tuple[str, ...] = ("real", "vendor", "synthetic")
Profile = Literal["standard", "small"]
#: The TrainConfig fields of each family that a tuned profile may set (and the manifest records).
HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    "meta": ("meta_trees", "meta_max_depth", "meta_min_leaf", "meta_max_samples"),
    "exec": (
        "exec_trees",
        "exec_max_depth",
        "exec_learning_rate",
        "exec_subsample",
        "exec_max_features",
    ),
    "sizer": ("sizer_timesteps", "sizer_dd_penalty", "sizer_size_penalty"),
}


class TrainingError(RuntimeError):
    """Base of every error that ends a training run without a release."""


class DataError(TrainingError):
    """Raise when the training data is unusable (empty window, one class, NaN features)."""


class ExportError(TrainingError):
    """Raise when an ONNX export does not load, score or match its native model."""


class ReleaseError(TrainingError):
    """Raise when a release cannot be built, signed, stored or published."""


def parse_weights(text: str) -> dict[str, float]:
    """Parse `real:1.0,vendor:0.5,synthetic:0.25` into weights per source.

    Raise `ValueError` naming the offending item on an unknown source or a bad weight.
    """
    weights: dict[str, float] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition(":")
        name = name.strip()
        if not sep or name not in SOURCES:
            raise ValueError(f"source weight {item!r}: expected one of {SOURCES} as 'name:weight'")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"source weight {item!r}: {value!r} is not a number") from None
        if not weight >= 0:
            raise ValueError(f"source weight {item!r}: weight must be >= 0")
        weights[name] = weight
    return weights


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs beyond Settings; `small` is the test-size profile."""

    profile: Profile = "standard"
    # walk-forward: the time-ordered rows are cut into `folds + 1` blocks; fold k trains
    # on blocks < k and tests on block k; the last block is the gated holdout.
    folds: int = 3
    seed: int = 7
    # meta: RandomForestClassifier
    meta_trees: int = 50
    meta_max_depth: int = 8
    meta_min_leaf: int = 20
    meta_max_rows: int = 100_000
    meta_max_samples: float = 0.5  # bootstrap share of the rows each tree sees
    # exec: GradientBoostingRegressor
    exec_trees: int = 100
    exec_max_depth: int = 3
    exec_learning_rate: float = 0.05
    exec_subsample: float = 0.5
    exec_max_features: float = 0.5
    exec_max_rows: int = 40_000
    # sizer: PPO on a 2x32 tanh MLP
    sizer_timesteps: int = 20_000
    sizer_n_steps: int = 1024
    sizer_batch_size: int = 256
    sizer_epochs: int = 4
    sizer_episode_len: int = 128
    sizer_hidden: tuple[int, ...] = (32, 32)
    sizer_dd_penalty: float = 0.5
    sizer_size_penalty: float = 0.02
    # data
    min_rows: int = 200
    # the frames hold only the most recent `max_points` decision points (and their
    # signals); None: every one. The walk-forward blocks cut what is kept.
    max_points: int | None = None
    weights: dict[str, float] = field(
        default_factory=lambda: {"real": 1.0, "vendor": 0.5, "synthetic": 0.25}
    )
    parity_tol: float = 1e-4
    # gate tolerance: a challenger must improve on the champion by more than this
    # (a retrain on identical data must not count as an improvement)
    gate_min_improvement: float = 1e-6
    # purged walk-forward: a training label must close this long before its test fold starts
    embargo_min: float = 15.0
    # the champion gate's one-sided paired test on per-decision sized R
    gate_test: Literal["paired_t", "bootstrap"] = "paired_t"
    gate_confidence: float = 0.9
    gate_bootstrap_draws: int = 4000
    # the trader skips a candidate whose predicted R is at or below this
    min_predicted_r: float = 0.0

    def hyperparameters(self) -> dict[str, dict[str, float]]:
        """Return the tunable values per family (as recorded in a manifest)."""
        return {
            fam: {name: float(getattr(self, name)) for name in names}
            for fam, names in HYPERPARAMETERS.items()
        }

    @classmethod
    def for_profile(cls, profile: Profile, **overrides: object) -> TrainConfig:
        """Return the standard or the small (test-size) configuration."""
        base = cls()
        if profile == "small":
            base = replace(
                base,
                profile="small",
                folds=2,
                meta_trees=16,
                meta_max_depth=5,
                meta_min_leaf=5,
                exec_trees=12,
                exec_max_depth=3,
                exec_learning_rate=0.1,
                sizer_timesteps=512,
                sizer_n_steps=256,
                sizer_batch_size=64,
                sizer_epochs=2,
                sizer_episode_len=64,
                min_rows=60,
            )
        return replace(base, **overrides)  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> TrainConfig:
        """Return the configuration that Settings (TRAIN_PROFILE, TRAIN_SOURCE_WEIGHTS) select."""
        profile: Profile = "small" if settings.train_profile == "small" else "standard"
        weights = parse_weights(settings.train_source_weights)
        merged: dict[str, object] = {
            "weights": {**cls().weights, **weights},
            "embargo_min": settings.train_embargo_min,
            "gate_test": settings.gate_test,
            "gate_confidence": settings.gate_confidence,
        }
        if settings.train_params_file:
            merged.update(load_params(settings.train_params_file))
        merged.update(overrides)
        return cls.for_profile(profile, **merged)


def load_params(path: str | Path) -> dict[str, object]:
    """Read a tuned profile (`{"meta": {...}, "exec": {...}, "sizer": {...}}`) as overrides.

    Raise `ValueError` naming the file and the offending family or parameter.
    """
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"training profile {path}: {exc}") from None
    params = doc.get("params", doc) if isinstance(doc, dict) else None
    if not isinstance(params, dict):
        raise ValueError(f"training profile {path}: expected an object of families")
    types = {f.name: f.type for f in fields(TrainConfig)}
    out: dict[str, object] = {}
    for fam, values in params.items():
        if fam not in HYPERPARAMETERS or not isinstance(values, dict):
            raise ValueError(f"training profile {path}: unknown family {fam!r}")
        for name, value in values.items():
            if name not in HYPERPARAMETERS[fam]:
                raise ValueError(
                    f"training profile {path}: {fam}.{name} is not tunable "
                    f"(one of {HYPERPARAMETERS[fam]})"
                )
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"training profile {path}: {fam}.{name}={value!r} is not a number")
            out[name] = int(value) if types[name] in ("int", int) else float(value)
    return out
