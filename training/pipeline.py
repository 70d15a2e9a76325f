"""One training run: data -> walk-forward fits -> ONNX + parity -> gate -> signed release.

Walk-forward: decision points are cut by time into `folds + 1` blocks. Fold k
trains on every row whose outcome closed before block k starts (purged, so no
label overlaps the test block) and tests on block k. The last block is the
latest holdout: its fold's models are the challengers, checked for ONNX parity
and gated against the champion on it. The sizer trains on the earlier test blocks,
whose meta probability and predicted R are out-of-sample predictions of their
fold's models, and is evaluated on the holdout with the models that will serve.
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
from infra.contracts import STRATEGIES, Artifact, GateResult, ModelManifest
from infra.settings import Settings
from infra.signing import Keyring
from training import export as ex
from training import models as md
from training.config import DataError, TrainConfig, TrainingError
from training.datasets import PitEngine, TrainingData, build_training_data
from training.gate import Verdict, champion_scores, judge
from training.release import Published, Registry, build_manifest, release_name, sign_manifest
from training.sizer import export_sizer, train_sizer
from training.trained import FamilyResult, TrainedSet

__all__ = ["RunResult", "TrainedSet", "fit_all", "run_training", "sizer_obs"]

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


def _cuts(ts: pd.Series, folds: int) -> list[pd.Timestamp]:
    """Return the start times of blocks 1..folds (quantiles of the decision times)."""
    values = np.sort(ts.to_numpy())
    cuts = []
    for k in range(1, folds + 1):
        cuts.append(pd.Timestamp(values[min(len(values) - 1, int(len(values) * k / (folds + 1)))]))
    if len(set(cuts)) != len(cuts) or cuts[0] <= pd.Timestamp(values[0]):
        raise DataError(
            f"the window is too short for {folds} walk-forward folds "
            f"({len(values)} decision points between {values[0]} and {values[-1]})"
        )
    return cuts


def _block(ts: pd.Series, lo: pd.Timestamp, hi: pd.Timestamp | None) -> np.ndarray:
    mask = ts >= lo
    if hi is not None:
        mask &= ts < hi
    return mask.to_numpy()


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


def _signal_meta_prob(signals: pd.DataFrame, groups: pd.DataFrame, proba: np.ndarray) -> np.ndarray:
    """Return each signal's probability for its own strategy from its group's row."""
    pos = pd.Series(np.arange(len(groups)), index=groups["group"].to_numpy())
    rows = pos.loc[signals["group"].to_numpy()].to_numpy()
    cols = signals["strategy"].map({s: i for i, s in enumerate(STRATEGIES)}).to_numpy()
    return proba[rows, cols]


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def fit_all(data: TrainingData, cfg: TrainConfig, step: Step | None = None) -> TrainedSet:
    """Fit the three challengers walk-forward and export them with parity checks."""
    say = step or (lambda _s: None)
    if cfg.folds < 2:
        raise DataError(
            "walk-forward needs at least 2 folds (the sizer trains on fold 1's test block)"
        )
    g, s = data.groups, data.signals
    cuts = _cuts(g["event_timestamp"], cfg.folds)
    bounds = [*cuts, None]
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
    for k in range(cfg.folds):
        lo, hi = bounds[k], bounds[k + 1]
        g_train = (g["exit_ts"] < lo).to_numpy()
        g_test = _block(g["event_timestamp"], lo, hi)
        s_train = (s["exit_ts"] < lo).to_numpy()
        s_test = _block(s["event_timestamp"], lo, hi)
        if g_train.sum() < 2 or g_test.sum() < 1 or s_train.sum() < 2 or s_test.sum() < 1:
            raise DataError(
                f"fold {k + 1}: too few rows (train {int(g_train.sum())} decision points / "
                f"{int(s_train.sum())} signals, test {int(g_test.sum())} / {int(s_test.sum())})"
            )
        say(f"fold {k + 1}/{cfg.folds}: meta classifier")
        with _timed(timings, "meta_fit"):
            meta_model = md.fit_meta(xm_all[g_train], ym_all[g_train], wm_all[g_train], cfg)
        proba = ex.meta_native_proba(meta_model, xm_all[g_test])
        meta_fold.append({**md.meta_metrics(proba, ym_all[g_test]), "fold": float(k + 1)})
        say(f"fold {k + 1}/{cfg.folds}: execution model")
        with _timed(timings, "exec_fit"):
            exec_model = md.fit_exec(xe_all[s_train], ye_all[s_train], we_all[s_train], cfg)
        pred = exec_model.predict(xe_all[s_test])
        exec_fold.append({**md.exec_metrics(pred, ye_all[s_test]), "fold": float(k + 1)})
        oos_meta_prob[s_test] = _signal_meta_prob(s[s_test], g[g_test], proba)
        oos_pred_r[s_test] = pred
    hold_g = _block(g["event_timestamp"], cuts[-1], None)
    hold_s = _block(s["event_timestamp"], cuts[-1], None)
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
        md.exec_metrics(exec_scores, ye_all[hold_s]),
        exec_fold,
        exec_model,
        exec_scores,
    )
    # the sizer: out-of-sample observations of the earlier test blocks
    train_s = _block(s["event_timestamp"], cuts[0], cuts[-1])
    obs = sizer_obs(s[train_s], oos_meta_prob[train_s], oos_pred_r[train_s])
    say(f"sizer: PPO on {len(obs)} time-ordered signals ({cfg.sizer_timesteps} steps)")
    with _timed(timings, "sizer_fit"):
        sizer = train_sizer(obs, ye_all[train_s], cfg)
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
        holdout_start=cuts[-1].to_pydatetime(),
        timings_s=timings,
        holdout_groups=g[hold_g],
        holdout_signals=s[hold_s],
    )
    return trained


def gate(
    trained: TrainedSet,
    champion: ModelManifest | None,
    fetch: Callable[[Artifact], bytes],
    cfg: TrainConfig,
) -> list[Verdict]:
    """Score the champion on the holdout and decide each family."""
    data = trained.data
    hg, hs = trained.holdout_groups, trained.holdout_signals
    assert hg is not None and hs is not None
    y_meta = hg["label"].to_numpy()
    y_r = hs["r_multiple"].to_numpy(dtype=np.float64)
    verdicts: list[Verdict] = []
    scores, art, why = champion_scores(fetch, champion, "meta", data.meta_matrix(hg))
    champ = md.meta_metrics(scores, y_meta) if scores is not None else None
    v_meta = judge("meta", trained.meta.holdout_metrics, champ, cfg.gate_min_improvement, art, why)
    verdicts.append(v_meta)
    serving_meta = trained.meta.holdout_scores if v_meta.release or scores is None else scores
    scores, art, why = champion_scores(fetch, champion, "exec", data.exec_matrix(hs))
    champ = md.exec_metrics(scores, y_r) if scores is not None else None
    v_exec = judge("exec", trained.exec.holdout_metrics, champ, cfg.gate_min_improvement, art, why)
    verdicts.append(v_exec)
    serving_exec = trained.exec.holdout_scores if v_exec.release or scores is None else scores
    # the sizers are compared on observations from the models that will serve
    obs = sizer_obs(hs, _signal_meta_prob(hs, hg, serving_meta), serving_exec.reshape(-1))
    chal_scores = ex.run_onnx(ex.onnx_session(trained.sizer.exported.onnx_bytes), "sizer", obs)
    chal = md.sizer_metrics(chal_scores, y_r)
    scores, art, why = champion_scores(fetch, champion, "sizer", obs)
    champ = md.sizer_metrics(scores, y_r) if scores is not None else None
    verdicts.append(judge("sizer", chal, champ, cfg.gate_min_improvement, art, why))
    return verdicts


def _gate_result(verdicts: Sequence[Verdict], champion: ModelManifest | None) -> GateResult:
    first = champion is None
    return GateResult(
        decision="first" if first else "release",
        reasons=tuple(
            f"{v.family}: {'release' if v.release else 'keep champion'} ({v.reason})"
            for v in verdicts
        ),
        champion_metrics={v.family: dict(v.champion) for v in verdicts if v.champion is not None},
        challenger_metrics={v.family: dict(v.challenger) for v in verdicts},
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
    pit_engine: PitEngine = "auto",
    registry: Registry | None = None,
) -> RunResult:
    """Run once: build data, train, gate and release; never publish on bad data or parity."""
    from training.report import write_report
    from training.sources import collect_sources

    say = step or (lambda _s: None)
    timings: dict[str, float] = {}
    registry = registry or Registry(settings)
    keyring = Keyring.from_settings(settings)
    if not keyring.can_sign:
        return RunResult("failed", "no signing key: set MANIFEST_HMAC_KEY", model_set)
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
                data = build_training_data(lakes, cfg, pit_engine)
        log.info("dataset: %s (join: %s)", data.counts, data.pit_engine)
        with _timed(timings, "train"):
            trained = fit_all(data, cfg, say)
        timings.update({f"train_{k}": v for k, v in trained.timings_s.items()})
        say("gate: champion vs challenger on the latest holdout")
        champion = registry.latest(model_set)
        verdicts = gate(trained, champion, registry.fetch, cfg)
    except TrainingError as exc:
        log.error("training run failed, nothing released: %s", exc)
        return RunResult("failed", str(exc), model_set, timings_s=timings)
    for v in verdicts:
        log.info(
            "gate %s: %s (%s)", v.family, "release" if v.release else "keep champion", v.reason
        )
    result = RunResult("refused", "", model_set, verdicts, None, out_dir, timings)
    if not any(v.release for v in verdicts):
        result.message = "the champion stays: no challenger beat it on the latest holdout"
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
        else:
            assert v.champion_artifact is not None
            artifacts.append(v.champion_artifact)
    window = (data.window[0], data.window[1])
    manifest = build_manifest(
        release=release,
        sequence=seq,
        artifacts=artifacts,
        model_set=model_set,
        gate=_gate_result(verdicts, champion),
        window=window,
        previous=registry.chain_link(model_set),
    )
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
