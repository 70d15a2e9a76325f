"""The champion/challenger gate: score both on the latest holdout window and decide.

Rules per family (both models scored on the very same holdout rows):

- meta: log loss lower and macro one-vs-rest AUC not lower;
- exec: mean absolute error of the R-multiple lower;
- sizer: Sharpe of sized R higher (the fixed-size Sharpe is reported beside it).

With no champion (first release, or a champion whose artifact is missing, fails its
checksum or no longer fits the model contract) the challenger is released.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from features.vectors import MODEL_FEATURES, MODEL_IO
from infra.contracts import Artifact, ModelManifest
from training.config import ReleaseError, TrainingError
from training.export import onnx_session, run_onnx

__all__ = ["Verdict", "champion_scores", "judge"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """The gate's decision for one family."""

    family: str
    release: bool
    reason: str
    challenger: dict[str, float]
    champion: dict[str, float] | None = None
    champion_artifact: Artifact | None = field(default=None, compare=False)


def judge(
    family: str,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    min_improvement: float = 0.0,
    champion_artifact: Artifact | None = None,
    no_champion_reason: str = "no champion",
) -> Verdict:
    """Decide one family from its challenger and champion holdout metrics."""
    if champion is None:
        return Verdict(family, True, no_champion_reason, challenger, None, champion_artifact)
    eps = min_improvement
    if family == "meta":
        ll_c, ll_k = challenger["log_loss"], champion["log_loss"]
        auc_c, auc_k = challenger["auc"], champion["auc"]
        ok = ll_c < ll_k - eps and auc_c >= auc_k - eps
        reason = f"log loss {ll_c:.4f} vs {ll_k:.4f}, AUC {auc_c:.4f} vs {auc_k:.4f}: " + (
            "better" if ok else "not better (need lower log loss and AUC not lower)"
        )
    elif family == "exec":
        m_c, m_k = challenger["mae"], champion["mae"]
        ok = m_c < m_k - eps
        reason = f"MAE {m_c:.4f} vs {m_k:.4f}: " + ("better" if ok else "not better")
    elif family == "sizer":
        s_c, s_k = challenger["sharpe_sized"], champion["sharpe_sized"]
        ok = s_c > s_k + eps
        reason = (
            f"Sharpe of sized R {s_c:.4f} vs {s_k:.4f} (fixed size {challenger['sharpe_fixed']:.4f}): "
            + ("better" if ok else "not better")
        )
    else:
        raise ValueError(f"unknown model family {family!r}")
    return Verdict(family, ok, reason, challenger, champion, champion_artifact)


def champion_scores(
    fetch: object, champion: ModelManifest | None, family: str, x: np.ndarray
) -> tuple[np.ndarray | None, Artifact | None, str]:
    """Score the champion's artifact of a family on holdout rows.

    `fetch(artifact) -> bytes` downloads and checks an artifact. Return (scores,
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
        scores = run_onnx(onnx_session(blob), family, x)
    except (ReleaseError, TrainingError) as exc:
        log.warning("champion %s %s unusable: %s", champion.release, family, exc)
        return None, art, f"champion unusable: {exc}"
    return scores, art, ""
