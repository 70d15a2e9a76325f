"""The run report: metrics per model (JSON), calibration and feature-importance PNGs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from features.vectors import EXEC_FEATURE_NAMES, META_FEATURE_NAMES
from infra.contracts import STRATEGIES

if TYPE_CHECKING:
    from infra.contracts import ModelManifest
    from training.gate import Verdict
    from training.trained import TrainedSet

__all__ = ["write_report"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _calibration(path: Path, trained: TrainedSet) -> None:
    plt = _plt()
    hg, hs = trained.holdout_groups, trained.holdout_signals
    assert hg is not None and hs is not None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    ax = axes[0]
    proba = trained.meta.holdout_scores
    labels = hg["label"].to_numpy()
    for k, s in enumerate(STRATEGIES):
        p = proba[:, k]
        hit = (labels == s).astype(float)
        bins = np.linspace(0, 1, 11)
        idx = np.clip(np.digitize(p, bins) - 1, 0, 9)
        xs, ys = [], []
        for b in range(10):
            m = idx == b
            if m.sum() >= 5:
                xs.append(p[m].mean())
                ys.append(hit[m].mean())
        ax.plot(xs, ys, marker="o", label=s)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(
        title="meta: calibration on the holdout",
        xlabel="predicted probability",
        ylabel="observed best rate",
    )
    ax.legend(fontsize=8)
    ax = axes[1]
    pred = trained.exec.holdout_scores.reshape(-1)
    r = hs["r_multiple"].to_numpy(dtype=np.float64)
    if len(pred) >= 10:
        qs = np.quantile(pred, np.linspace(0, 1, 11))
        idx = np.clip(np.searchsorted(qs, pred, side="right") - 1, 0, 9)
        xs = [pred[idx == b].mean() for b in range(10) if (idx == b).any()]
        ys = [r[idx == b].mean() for b in range(10) if (idx == b).any()]
        ax.plot(xs, ys, marker="o")
    lo, hi = (float(pred.min()), float(pred.max())) if len(pred) else (0.0, 1.0)
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set(
        title="exec: predicted vs realised R (deciles)",
        xlabel="predicted R",
        ylabel="mean realised R",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _importance(path: Path, trained: TrainedSet) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 6))
    for ax, model, names, title in (
        (axes[0], trained.meta.model, META_FEATURE_NAMES, "meta (RandomForest)"),
        (axes[1], trained.exec.model, EXEC_FEATURE_NAMES, "exec (GradientBoosting)"),
    ):
        imp = np.asarray(model.feature_importances_, dtype=np.float64)
        order = np.argsort(imp)[-15:]
        ax.barh([names[i] for i in order], imp[order])
        ax.set(title=f"{title}: impurity importance (top 15)")
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _sizer(path: Path, trained: TrainedSet) -> None:
    plt = _plt()
    hs = trained.holdout_signals
    assert hs is not None
    r = hs["r_multiple"].to_numpy(dtype=np.float64)
    size = trained.sizer.holdout_scores.reshape(-1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.cumsum(r), label="fixed size 1.0")
    ax.plot(np.cumsum(size * r), label="RL sizer")
    ax.set(title="holdout: cumulative R", xlabel="signal", ylabel="R")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(
    out_dir: Path,
    trained: TrainedSet,
    verdicts: Sequence[Verdict],
    manifest: ModelManifest | None,
    timings: dict[str, float],
) -> Path:
    """Write `{family}.json`, `run.json`, `calibration.png`, `importance.png`, `sizer.png`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_family = {v.family: v for v in verdicts}
    for fam in (trained.meta, trained.exec, trained.sizer):
        v = by_family.get(fam.family)
        doc = {
            "family": fam.family,
            "holdout": fam.holdout_metrics,
            "walk_forward": fam.fold_metrics,
            "parity_max_abs_diff": fam.exported.max_abs_diff,
            "onnx_bytes": len(fam.exported.onnx_bytes),
            "gate": None
            if v is None
            else {
                "release": v.release,
                "serving": v.serving,
                "reason": v.reason,
                "baseline": v.baseline,
                "challenger": v.challenger,
                "champion": v.champion,
            },
        }
        (out_dir / f"{fam.family}.json").write_text(json.dumps(doc, indent=2, default=float))
    run = {
        "counts": trained.data.counts,
        "pit_engine": trained.data.pit_engine,
        "window": [str(t) for t in trained.data.window],
        "holdout_start": str(trained.holdout_start),
        "timings_s": timings,
        "released": manifest.release if manifest else None,
        "sequence": manifest.sequence if manifest else None,
    }
    (out_dir / "run.json").write_text(json.dumps(run, indent=2, default=str))
    _calibration(out_dir / "calibration.png", trained)
    _importance(out_dir / "importance.png", trained)
    _sizer(out_dir / "sizer.png", trained)
    return out_dir
