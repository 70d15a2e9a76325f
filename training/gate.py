"""The gate: each family against its trivial baseline and the champion, then luck.

Rules per family (all models scored on the very same holdout rows):

- baseline: meta must choose candidates with a higher mean R than the rules path
  (`RULE_PRIORITY`); exec must have a lower MAE than predicting the training mean
  R; the sizer's Sharpe of sized R must beat fixed size 1.0;
- champion: meta log loss lower and macro one-vs-rest AUC not lower; exec MAE
  lower; sizer Sharpe of sized R higher.

A family that fails either keeps the champion's model, or, with no usable champion
model, no model at all (the trader's rule for that family decides). Then, with a
champion, the set that would serve is replayed over the holdout against the
champion's set (`training.paths`): its per-decision sized R must beat the
champion's under a one-sided paired test at `gate_confidence`, else nothing is
released. With no champion the challengers that beat their baselines are released.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from features.vectors import MODEL_FEATURES, MODEL_IO
from infra.contracts import Artifact, ModelManifest
from training.config import ReleaseError, TrainingError
from training.export import onnx_session, run_onnx

__all__ = [
    "Verdict",
    "beats_baseline",
    "champion_model",
    "champion_scores",
    "judge",
    "refuse_all",
]

log = logging.getLogger(__name__)
Serving = Literal["release", "champion", "rules"]


@dataclass(frozen=True)
class Verdict:
    """The gate's decision for one family; `serving` says which model serves next."""

    family: str
    release: bool
    reason: str
    challenger: dict[str, float]
    champion: dict[str, float] | None = None
    champion_artifact: Artifact | None = field(default=None, compare=False)
    baseline: dict[str, float] | None = None
    serving: Serving = "release"


def beats_baseline(
    family: str, challenger: dict[str, float], baseline: dict[str, float], eps: float = 0.0
) -> tuple[bool, str]:
    """Say whether a challenger beats its family's trivial baseline, and why."""
    if family == "meta":
        c, b = challenger["chosen_r"], baseline["chosen_r"]
        ok = c > b + eps
        what = f"mean R of the chosen candidate {c:.4f} vs the rules' {b:.4f}"
    elif family == "exec":
        c, b = challenger["mae"], baseline["mae"]
        ok = c < b - eps
        what = f"MAE {c:.4f} vs the mean predictor's {b:.4f}"
    elif family == "sizer":
        c, b = challenger["sharpe_sized"], baseline["sharpe_sized"]
        ok = c > b + eps
        what = f"Sharpe of sized R {c:.4f} vs fixed size {b:.4f}"
    else:
        raise ValueError(f"unknown model family {family!r}")
    return ok, what + (": beats the baseline" if ok else ": does not beat the baseline")


def _versus_champion(
    family: str, challenger: dict[str, float], champion: dict[str, float], eps: float
) -> tuple[bool, str]:
    if family == "meta":
        ll_c, ll_k = challenger["log_loss"], champion["log_loss"]
        auc_c, auc_k = challenger["auc"], champion["auc"]
        ok = ll_c < ll_k - eps and auc_c >= auc_k - eps
        return ok, f"log loss {ll_c:.4f} vs {ll_k:.4f}, AUC {auc_c:.4f} vs {auc_k:.4f}: " + (
            "better" if ok else "not better (need lower log loss and AUC not lower)"
        )
    if family == "exec":
        m_c, m_k = challenger["mae"], champion["mae"]
        ok = m_c < m_k - eps
        return ok, f"MAE {m_c:.4f} vs {m_k:.4f}: " + ("better" if ok else "not better")
    if family == "sizer":
        s_c, s_k = challenger["sharpe_sized"], champion["sharpe_sized"]
        ok = s_c > s_k + eps
        return ok, (
            f"Sharpe of sized R {s_c:.4f} vs {s_k:.4f} (fixed size {challenger['sharpe_fixed']:.4f}): "
            + ("better" if ok else "not better")
        )
    raise ValueError(f"unknown model family {family!r}")


def judge(
    family: str,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    min_improvement: float = 0.0,
    champion_artifact: Artifact | None = None,
    no_champion_reason: str = "no champion",
    baseline: dict[str, float] | None = None,
) -> Verdict:
    """Decide one family from its challenger, champion and baseline holdout metrics.

    `champion` None means no usable champion model: the challenger is released if it
    beats the baseline (or no baseline is given), else the family serves no model.
    """
    base_ok, base_why = (
        (True, "")
        if baseline is None
        else beats_baseline(family, challenger, baseline, min_improvement)
    )
    if champion is None:
        reason = "; ".join(x for x in (no_champion_reason, base_why) if x)
        if base_ok:
            return Verdict(family, True, reason, challenger, None, champion_artifact, baseline)
        return Verdict(
            family, False, reason, challenger, None, champion_artifact, baseline, "rules"
        )
    champ_ok, champ_why = _versus_champion(family, challenger, champion, min_improvement)
    ok = champ_ok and base_ok
    reason = "; ".join(x for x in (champ_why, base_why) if x)
    return Verdict(
        family,
        ok,
        reason,
        challenger,
        champion,
        champion_artifact,
        baseline,
        "release" if ok else "champion",
    )


def refuse_all(verdicts: list[Verdict], why: str) -> list[Verdict]:
    """Return the verdicts with every release withdrawn (the champion's set stays)."""
    out = []
    for v in verdicts:
        if v.release:
            serving: Serving = "champion" if v.champion is not None else "rules"
            v = replace(v, release=False, serving=serving, reason=f"{v.reason}; {why}")
        out.append(v)
    return out


def champion_model(
    fetch: object, champion: ModelManifest | None, family: str
) -> tuple[object | None, Artifact | None, str]:
    """Load the champion's ONNX session of a family.

    `fetch(artifact) -> bytes` downloads and checks an artifact. Return (session,
    artifact, "") or (None, artifact-or-None, why the champion cannot be used).
    """
    if champion is None:
        return None, None, "no champion"
    art = champion.artifact(family)
    if art is None:
        return None, None, f"champion {champion.release} has no {family} model"
    if tuple(art.feature_names) != MODEL_FEATURES[family] or tuple(art.input_names) != (
        MODEL_IO[family]["input"],
    ):
        return None, art, f"champion {family} model no longer fits the model contract"
    try:
        blob = fetch(art)  # type: ignore[operator]
        session = onnx_session(blob)
    except (ReleaseError, TrainingError) as exc:
        log.warning("champion %s %s unusable: %s", champion.release, family, exc)
        return None, art, f"champion unusable: {exc}"
    return session, art, ""


def champion_scores(
    fetch: object, champion: ModelManifest | None, family: str, x: np.ndarray
) -> tuple[np.ndarray | None, Artifact | None, str]:
    """Score the champion's artifact of a family on holdout rows (see `champion_model`)."""
    session, art, why = champion_model(fetch, champion, family)
    if session is None:
        return None, art, why
    try:
        return run_onnx(session, family, x), art, ""  # type: ignore[arg-type]
    except TrainingError as exc:
        log.warning("champion %s unusable: %s", family, exc)
        return None, art, f"champion unusable: {exc}"
