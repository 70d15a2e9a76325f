"""One training run: data -> walk-forward fits -> ONNX + parity -> gate -> signed release.

Walk-forward (`training.walk_forward`): decision points are cut by time into
`folds + 1` blocks. Fold k trains on every row whose outcome closed an embargo
before block k starts (purged, so no label overlaps the test block) and tests on
block k. The last block is the latest holdout: its fold's models are the
challengers, checked for ONNX parity and gated on it (`training.gate`). The sizer
trains on the earlier test blocks whose outcomes closed before the holdout, whose
meta probability and predicted R are out-of-sample predictions of their fold's
models, and is evaluated on the holdout with the models that will serve.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.vectors import SIZER_FEATURE_NAMES
from infra.contracts import Artifact, FamilyDecision, GateResult, ModelManifest
from infra.crash import CrashPoint, crash_point
from infra.settings import Settings
from infra.signing import Keyring
from training import export as ex
from training import models as md
from training import paths
from training.config import DataError, TrainConfig, TrainingError
from training.datasets import PitEngine, TrainingData, build_training_data
from training.executor import Executor, LocalExecutor
from training.fold_fits import fit_exec_fold, fit_meta_fold, fit_sizer
from training.gate import Verdict, champion_model, champion_scores, judge, refuse_all
from training.release import Published, Registry, build_manifest, release_name, sign_manifest
from training.sizer import export_sizer
from training.trained import FamilyResult, TrainedSet
from training.walk_forward import folds, purged_train

__all__ = ["GateOutcome", "RunResult", "TrainedSet", "fit_all", "gate", "run_training", "sizer_obs"]

log = logging.getLogger(__name__)
Step = Callable[[str], None]


@dataclass
class RunResult:
    """The outcome of a run: released, refused (gate), failed (bad data/export) or skipped."""

    status: str
    message: str
    model_set: str = "default"
    verdicts: list[Verdict] = field(default_factory=list)
    published: Published | None = None
    report_dir: Path | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def manifest(self) -> ModelManifest | None:
        """Return the published manifest, if any."""
        return self.published.manifest if self.published else None


def sizer_obs(signals: pd.DataFrame, meta_prob: np.ndarray, predicted_r: np.ndarray) -> np.ndarray:
    """Return sizer observations laid out as `SIZER_FEATURE_NAMES` (float32)."""
    cols = {
        "meta_prob": meta_prob,
        "predicted_r": predicted_r,
        "side": signals["side"].to_numpy(dtype=np.float64),
        "stop_atr": signals["stop_atr"].to_numpy(dtype=np.float64),
    }
    for name in SIZER_FEATURE_NAMES:
        if name not in cols:
            cols[name] = signals[name].to_numpy(dtype=np.float64)
    return np.column_stack([cols[n] for n in SIZER_FEATURE_NAMES]).astype(np.float32)


def _signal_meta_prob(
    signals: pd.DataFrame, groups: pd.DataFrame, proba: np.ndarray | None
) -> np.ndarray:
    """Return each signal's probability for its own strategy from its group's row."""
    return paths.signal_meta_prob(signals, groups, proba)


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def fit_all(
    data: TrainingData,
    cfg: TrainConfig,
    step: Step | None = None,
    executor: Executor | None = None,
) -> TrainedSet:
    """Fit the three challengers walk-forward and export them with parity checks.

    The folds' meta and exec fits, then the sizer, run on `executor` (default: here).
    """
    say = step or (lambda _s: None)
    run = executor or LocalExecutor()
    g, s = data.groups, data.signals
    splits = folds(g, s, cfg.folds, cfg.embargo_min)
    holdout_start = splits[-1].test_start
    timings: dict[str, float] = {}
    xm_all, ym_all, wm_all = (
        data.meta_matrix(),
        g["label"].to_numpy(),
        g["weight"].to_numpy(dtype=np.float64),
    )
    xe_all, ye_all, we_all = (
        data.exec_matrix(),
        s["r_multiple"].to_numpy(dtype=np.float64),
        s["weight"].to_numpy(dtype=np.float64),
    )
    meta_fold: list[dict[str, float]] = []
    exec_fold: list[dict[str, float]] = []
    oos_meta_prob = np.full(len(s), np.nan)
    oos_pred_r = np.full(len(s), np.nan)
    meta_model: Any = None
    exec_model: Any = None
    train_mean_r = 0.0
    say(f"walk-forward: meta and exec fits of {cfg.folds} folds ({run.name})")
    shared_m = [run.share(a) for a in (xm_all, ym_all, wm_all)]
    shared_e = [run.share(a) for a in (xe_all, ye_all, we_all)]
    pending = []
    for fold in splits:
        pending.append(run.submit(fit_meta_fold, *shared_m, fold.g_train, fold.g_test, cfg))
        pending.append(run.submit(fit_exec_fold, *shared_e, fold.s_train, fold.s_test, cfg))
    fits = run.gather(pending)
    for fold in splits:
        k = fold.number - 1
        g_test, s_train, s_test = fold.g_test, fold.s_train, fold.s_test
        train_mean_r = float(np.average(ye_all[s_train], weights=we_all[s_train]))
        meta_model, proba, meta_s = fits[2 * k]
        exec_model, pred, exec_s = fits[2 * k + 1]
        timings["meta_fit"] = timings.get("meta_fit", 0.0) + meta_s
        timings["exec_fit"] = timings.get("exec_fit", 0.0) + exec_s
        meta_fold.append({**md.meta_metrics(proba, ym_all[g_test]), "fold": float(k + 1)})
        exec_fold.append(
            {**md.exec_metrics(pred, ye_all[s_test], train_mean_r), "fold": float(k + 1)}
        )
        oos_meta_prob[s_test] = _signal_meta_prob(s[s_test], g[g_test], proba)
        oos_pred_r[s_test] = pred
    hold_g, hold_s = splits[-1].g_test, splits[-1].s_test
    say("ONNX export and parity: meta, exec")
    with _timed(timings, "export"):
        meta_bytes = ex.export_meta(meta_model)
        meta_exp = ex.check_parity(
            "meta",
            meta_bytes,
            lambda x: ex.meta_native_proba(meta_model, x),
            xm_all[hold_g],
            cfg.parity_tol,
        )
        exec_bytes = ex.export_exec(exec_model)
        exec_exp = ex.check_parity(
            "exec",
            exec_bytes,
            lambda x: exec_model.predict(x).reshape(-1, 1),
            xe_all[hold_s],
            cfg.parity_tol,
        )
    # what serves is the ONNX graph: holdout metrics and the gate use its outputs
    meta_scores = meta_exp.holdout_output
    exec_scores = exec_exp.holdout_output
    meta_res = FamilyResult(
        "meta",
        meta_exp,
        md.meta_metrics(meta_scores, ym_all[hold_g]),
        meta_fold,
        meta_model,
        meta_scores,
    )
    exec_res = FamilyResult(
        "exec",
        exec_exp,
        md.exec_metrics(exec_scores, ye_all[hold_s], train_mean_r),
        exec_fold,
        exec_model,
        exec_scores,
    )
    # the sizer: out-of-sample observations of the earlier test blocks
    train_s = purged_train(
        s, holdout_start, pd.Timedelta(minutes=cfg.embargo_min), lo=splits[0].test_start
    )
    if train_s.sum() < 2:
        raise DataError(
            f"sizer: {int(train_s.sum())} out-of-sample signals closed before the holdout"
        )
    obs = sizer_obs(s[train_s], oos_meta_prob[train_s], oos_pred_r[train_s])
    say(f"sizer: PPO on {len(obs)} time-ordered signals ({cfg.sizer_timesteps} steps)")
    sizer, timings["sizer_fit"] = run.gather([run.submit(fit_sizer, obs, ye_all[train_s], cfg)])[0]
    hold_obs = sizer_obs(
        s[hold_s], _signal_meta_prob(s[hold_s], g[hold_g], meta_scores), exec_scores.reshape(-1)
    )
    with _timed(timings, "export"):
        sizer_bytes = export_sizer(sizer)
        sizer_exp = ex.check_parity(
            "sizer", sizer_bytes, sizer.predict_size, hold_obs, cfg.parity_tol
        )
    size = sizer_exp.holdout_output
    sizer_res = FamilyResult(
        "sizer", sizer_exp, md.sizer_metrics(size, ye_all[hold_s]), [], sizer, size
    )
    trained = TrainedSet(
        data=data,
        meta=meta_res,
        exec=exec_res,
        sizer=sizer_res,
        holdout_start=holdout_start.to_pydatetime(),
        timings_s=timings,
        holdout_groups=g[hold_g],
        holdout_signals=s[hold_s],
    )
    return trained


@dataclass
class GateOutcome:
    """The gate's verdicts, the replayed holdout paths and the paired test between them."""

    verdicts: list[Verdict]
    test: paths.PairedTest
    versus: str  # what the serving set was tested against: "champion" or "rules"
    confidence: float
    path_metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def released(self) -> list[str]:
        """Return the families whose challengers serve next."""
        return [v.family for v in self.verdicts if v.release]


def gate(
    trained: TrainedSet,
    champion: ModelManifest | None,
    fetch: Callable[[Artifact], bytes],
    cfg: TrainConfig,
) -> GateOutcome:
    """Judge each family on the holdout, then test the serving set against the champion's."""
    data = trained.data
    hg, hs = trained.holdout_groups, trained.holdout_signals
    assert hg is not None and hs is not None
    eps = cfg.gate_min_improvement
    y_meta = hg["label"].to_numpy()
    y_r = hs["r_multiple"].to_numpy(dtype=np.float64)
    rules_choice = paths.chosen_signals(hs, hg, None)

    def chosen_r(proba: np.ndarray | None) -> float:
        rows = paths.chosen_signals(hs, hg, proba) if proba is not None else rules_choice
        return float(np.mean(y_r[rows])) if len(rows) else 0.0

    k_meta, art, why = champion_scores(fetch, champion, "meta", data.meta_matrix(hg))
    chal = {**trained.meta.holdout_metrics, "chosen_r": chosen_r(trained.meta.holdout_scores)}
    champ = (
        None
        if k_meta is None
        else {**md.meta_metrics(k_meta, y_meta), "chosen_r": chosen_r(k_meta)}
    )
    v_meta = judge("meta", chal, champ, eps, art, why, {"chosen_r": chosen_r(None)})
    k_exec, art, why = champion_scores(fetch, champion, "exec", data.exec_matrix(hs))
    chal = trained.exec.holdout_metrics
    mean_r = chal["mae_mean_predictor"]
    champ = None if k_exec is None else md.exec_metrics(k_exec, y_r)
    v_exec = judge("exec", chal, champ, eps, art, why, {"mae": mean_r})
    serving = {
        "meta": _pick(v_meta, trained.meta.holdout_scores, k_meta),
        "exec": _pick(v_exec, trained.exec.holdout_scores, k_exec),
    }
    # the sizers are compared on observations from the models that will serve
    obs = sizer_obs(
        hs, _signal_meta_prob(hs, hg, serving["meta"]), _pred_or_zero(serving["exec"], len(hs))
    )
    chal_sizer = _onnx_fn(ex.onnx_session(trained.sizer.exported.onnx_bytes), "sizer")
    chal = md.sizer_metrics(chal_sizer(obs), y_r)
    session, art, why = champion_model(fetch, champion, "sizer")
    k_sizer = None if session is None else _onnx_fn(session, "sizer")
    champ = None if k_sizer is None else md.sizer_metrics(k_sizer(obs), y_r)
    v_sizer = judge("sizer", chal, champ, eps, art, why, {"sharpe_sized": chal["sharpe_fixed"]})
    verdicts = [v_meta, v_exec, v_sizer]
    sizer_fn = {"release": chal_sizer, "champion": k_sizer, "rules": None}[v_sizer.serving]

    def obs_at(rows: np.ndarray, meta_prob: np.ndarray, pred: np.ndarray) -> np.ndarray:
        return sizer_obs(hs.iloc[rows], meta_prob, pred)

    def replay(proba: np.ndarray | None, pred: np.ndarray | None, sizer: object) -> paths.Path:
        return paths.replay(
            hs, hg, proba=proba, predicted_r=pred, sizer=sizer,  # type: ignore[arg-type]
            obs=obs_at, min_predicted_r=cfg.min_predicted_r,
        )  # fmt: skip

    new = replay(serving["meta"], serving["exec"], sizer_fn)
    has_champion = any(x is not None for x in (k_meta, k_exec, k_sizer))
    old = replay(k_meta, k_exec, k_sizer) if has_champion else replay(None, None, None)
    test = paths.paired_test(
        new.sized_r, old.sized_r, cfg.gate_test, cfg.gate_bootstrap_draws, cfg.seed
    )
    versus = "champion" if has_champion else "rules"
    outcome = GateOutcome(
        verdicts,
        test,
        versus,
        cfg.gate_confidence,
        {"serving": new.summary(), versus: old.summary()},
    )
    alpha = 1.0 - cfg.gate_confidence
    if has_champion and outcome.released and not test.p_value < alpha:
        why = (
            f"sized R over the holdout not better than the champion's with "
            f"{cfg.gate_confidence:.0%} confidence ({test.name}, p={test.p_value:.4f}, "
            f"mean difference {test.mean_diff:.4f} R over {test.n} decisions)"
        )
        outcome.verdicts = refuse_all(verdicts, why)
    return outcome


def _pick(v: Verdict, challenger: np.ndarray, champion: np.ndarray | None) -> np.ndarray | None:
    """Return the scores of the model that serves a family next (None: the rule)."""
    return {"release": challenger, "champion": champion, "rules": None}[v.serving]


def _pred_or_zero(pred: np.ndarray | None, n: int) -> np.ndarray:
    return np.zeros(n) if pred is None else np.asarray(pred, dtype=np.float64).reshape(-1)


def _onnx_fn(session: Any, family: str) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: ex.run_onnx(session, family, x)


def _gate_result(outcome: GateOutcome, champion: ModelManifest | None) -> GateResult:
    verdicts = outcome.verdicts
    first = champion is None
    word = {"release": "release", "champion": "keep champion", "rules": "rules (no model)"}
    return GateResult(
        decision="first" if first else "release",
        reasons=(
            *(f"{v.family}: {word[v.serving]} ({v.reason})" for v in verdicts),
            f"sized R vs the {outcome.versus}: {outcome.test.name} one-sided, "
            f"p={outcome.test.p_value:.4f}, mean difference {outcome.test.mean_diff:.4f} R "
            f"over {outcome.test.n} decisions",
        ),
        champion_metrics={v.family: dict(v.champion) for v in verdicts if v.champion is not None},
        challenger_metrics={v.family: dict(v.challenger) for v in verdicts},
        baseline_metrics={
            **{v.family: dict(v.baseline) for v in verdicts if v.baseline is not None},
            **{f"path_{k}": v for k, v in outcome.path_metrics.items()},
        },
        families={v.family: FamilyDecision(decision=v.serving, reason=v.reason) for v in verdicts},
        test=f"{outcome.test.name} vs {outcome.versus}",
        p_value=outcome.test.p_value,
        confidence=outcome.confidence,
    )


def run_training(
    settings: Settings,
    cfg: TrainConfig,
    *,
    lakes: Sequence[tuple[str, Any]] | None = None,
    model_set: str = "default",
    symbols: Sequence[str] | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    report_dir: Path | None = None,
    step: Step | None = None,
    publish_topic: bool = True,
    pit_engine: PitEngine | None = None,
    registry: Registry | None = None,
    executor: Executor | None = None,
) -> RunResult:
    """Run once: build data, train, gate and release; never publish on bad data or parity.

    `executor` runs the fits (`training.executor`: here, or tasks on a Ray cluster).
    """
    from training.report import write_report
    from training.sources import collect_sources

    say = step or (lambda _s: None)
    timings: dict[str, float] = {}
    registry = registry or Registry(settings)
    keyring = Keyring.from_settings(settings)
    if not keyring.can_sign:
        return RunResult(
            "failed",
            "no signing key: set MANIFEST_ED25519_PRIVATE_KEY (or MANIFEST_HMAC_KEY)",
            model_set,
        )
    out_dir = report_dir or _default_report_dir(settings)
    try:
        with tempfile.TemporaryDirectory(prefix="tradeloop-train-") as work:
            say("collecting sources")
            with _timed(timings, "sources"):
                if lakes is None:
                    vendor = [p.strip() for p in settings.train_vendor_data.split(",") if p.strip()]
                    lakes = collect_sources(
                        settings,
                        Path(work),
                        start=start,
                        end=end,
                        symbols=symbols,
                        vendor_paths=vendor,
                        synthetic_bars=settings.train_synthetic_bars,
                    )
            say("point-in-time dataset")
            with _timed(timings, "dataset"):
                data = build_training_data(
                    lakes, cfg, pit_engine or settings.train_pit_engine, executor=executor
                )
        log.info("dataset: %s (join: %s)", data.counts, data.pit_engine)
        with _timed(timings, "train"):
            trained = fit_all(data, cfg, say, executor)
        timings.update({f"train_{k}": v for k, v in trained.timings_s.items()})
        say("gate: champion vs challenger on the latest holdout")
        champion = registry.latest(model_set)
        outcome = gate(trained, champion, registry.fetch, cfg)
        verdicts = outcome.verdicts
    except TrainingError as exc:
        log.error("training run failed, nothing released: %s", exc)
        return RunResult("failed", str(exc), model_set, timings_s=timings)
    for v in verdicts:
        log.info("gate %s: %s (%s)", v.family, v.serving, v.reason)
    result = RunResult("refused", "", model_set, verdicts, None, out_dir, timings)
    if not any(v.release for v in verdicts):
        result.message = (
            "the champion stays: no challenger beat it (and its baseline) on the latest holdout"
            if champion is not None
            else "nothing released: no challenger beat its baseline on the latest holdout"
        )
        write_report(out_dir, trained, verdicts, None, timings)
        return result
    say("release: upload, sign, publish")
    seq = registry.next_sequence()
    release = release_name(seq)
    fams = {"meta": trained.meta, "exec": trained.exec, "sizer": trained.sizer}
    artifacts: list[Artifact] = []
    for v in verdicts:
        if v.release:
            fr = fams[v.family]
            artifacts.append(
                registry.upload(
                    v.family,
                    release,
                    fr.exported.onnx_bytes,
                    metrics={**v.challenger, "parity_max_abs_diff": fr.exported.max_abs_diff},
                    probe_input=fr.exported.probe_input,
                    probe_output=fr.exported.probe_output,
                )
            )
        elif v.serving == "champion":
            assert v.champion_artifact is not None
            artifacts.append(v.champion_artifact)
    window = (data.window[0], data.window[1])
    manifest = build_manifest(
        release=release,
        sequence=seq,
        artifacts=artifacts,
        model_set=model_set,
        gate=_gate_result(outcome, champion),
        window=window,
        previous=registry.chain_link(model_set),
    )
    manifest = manifest.model_copy(update={"hyperparameters": cfg.hyperparameters()})
    crash_point(CrashPoint.TRAINING_AFTER_UPLOAD_BEFORE_MANIFEST)
    result.published = registry.publish(sign_manifest(manifest, keyring), topic=publish_topic)
    result.status = "released"
    released = [v.family for v in verdicts if v.release]
    result.message = f"released {release} (sequence {seq}): new {', '.join(released)}"
    write_report(out_dir, trained, verdicts, result.published.manifest, timings)
    return result


def _default_report_dir(settings: Settings) -> Path:
    base = (
        Path(settings.train_report_dir)
        if settings.train_report_dir
        else settings.home / "reports" / "training"
    )
    return base / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
