"""The gate: baselines per family, the paired test on holdout sized R, the manifest record."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from infra.contracts import RULE_PRIORITY, STRATEGIES, GateResult, ModelManifest, decode, encode
from infra.objectstore import LocalObjectStore
from infra.settings import Settings
from infra.signing import Keyring
from tests.helpers import unique_topic_prefix
from tests.kit.lake import _strategy_stats, synthetic_frames, write_frames
from trader.delivery.release import verify_release
from training.config import TrainConfig
from training.datasets import load_lake
from training.gate import judge, refuse_all
from training.paths import chosen_signals, paired_test, replay
from training.pipeline import RunResult, run_training

CFG = TrainConfig.for_profile("small")
KEY = "gate-test-key-0123456789abcdef"
META = {"log_loss": 1.0, "auc": 0.6, "chosen_r": 0.5}


def test_a_family_that_loses_to_its_baseline_keeps_the_champion_or_the_rules() -> None:
    rules = {"chosen_r": 0.6}
    first = judge("meta", META, None, baseline=rules)
    assert (first.release, first.serving) == (False, "rules")
    assert "does not beat the baseline" in first.reason and "0.6000" in first.reason
    champ = {"log_loss": 1.2, "auc": 0.55, "chosen_r": 0.4}
    kept = judge("meta", META, champ, baseline=rules)  # better than the champion, not the rules
    assert (kept.release, kept.serving) == (False, "champion")
    assert "better" in kept.reason
    won = judge("meta", META, champ, baseline={"chosen_r": 0.45})
    assert (won.release, won.serving) == (True, "release")
    # exec against the mean predictor, the sizer against fixed size
    assert not judge("exec", {"mae": 0.9}, None, baseline={"mae": 0.85}).release
    assert judge("exec", {"mae": 0.8}, None, baseline={"mae": 0.85}).release
    sizer = {"sharpe_sized": 0.30, "sharpe_fixed": 0.31}
    assert judge("sizer", sizer, None, baseline={"sharpe_sized": 0.31}).serving == "rules"
    # no baseline given: the old rule (no champion releases)
    assert judge("exec", {"mae": 9.0}, None).release
    withdrawn = refuse_all([won, first], "luck")
    assert [(v.release, v.serving) for v in withdrawn] == [(False, "champion"), (False, "rules")]
    assert withdrawn[0].reason.endswith("; luck")


def test_paired_tests_separate_an_edge_from_noise() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(0.1, 1.0, 800)
    better = base + 0.2 + rng.normal(0, 0.3, 800)
    noise = base + rng.normal(0, 0.3, 800)
    for method in ("paired_t", "bootstrap"):
        assert paired_test(better, base, method).p_value < 0.001
        assert paired_test(base, better, method).p_value > 0.99
        assert 0.05 < paired_test(noise, base, method, seed=1).p_value < 0.95
    same = paired_test(base, base)
    assert same.p_value == 1.0 and same.mean_diff == 0.0 and same.n == 800
    with pytest.raises(ValueError, match="unknown gate test"):
        paired_test(better, base, "wilcoxon")


def _holdout() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two decision points: S2/S6/S3 candidates, then S3/S11."""
    signals = pd.DataFrame(
        {
            "group": [0, 0, 0, 1, 1],
            "strategy": ["S2", "S6", "S3", "S3", "S11"],
            "r_multiple": [2.0, -1.0, 0.5, -1.0, 1.5],
        }
    )
    return signals, pd.DataFrame({"group": [0, 1]})


def test_the_replay_chooses_like_the_trader_rules_or_meta() -> None:
    signals, groups = _holdout()
    # rules: S6 before S2 before S11 before S3
    assert RULE_PRIORITY.index("S6") < RULE_PRIORITY.index("S2")
    assert chosen_signals(signals, groups, None).tolist() == [1, 4]
    proba = np.zeros((2, len(STRATEGIES)))
    proba[0, STRATEGIES.index("S2")] = 0.9
    proba[1, STRATEGIES.index("S3")] = 0.6
    assert chosen_signals(signals, groups, proba).tolist() == [0, 3]

    def obs(rows: np.ndarray, meta_prob: np.ndarray, pred: np.ndarray) -> np.ndarray:
        return np.column_stack([meta_prob, pred])

    rules = replay(signals, groups, proba=None, predicted_r=None, sizer=None, obs=obs)
    assert rules.sized_r.tolist() == [-1.0, 1.5]
    pred = np.array([1.0, 0.0, 0.0, -0.5, 0.0])  # the exec model vetoes group 1's S3
    models = replay(
        signals, groups, proba=proba, predicted_r=pred, sizer=lambda x: 1.0 + x[:, 1], obs=obs
    )
    assert models.sized_r.tolist() == [4.0, 0.0] and models.taken.tolist() == [True, False]
    assert models.summary()["trades"] == 1.0


def test_old_manifests_without_the_new_gate_fields_still_decode() -> None:
    from tests.kit.events import manifest

    new = manifest(pd.Timestamp.now(tz="UTC").to_pydatetime(), "r000001-x", 1)
    obj = orjson.loads(encode(new))
    obj.pop("hyperparameters")
    obj["gate"] = {"decision": "release", "reasons": ["meta: release (better)"]}
    old = decode(orjson.dumps(obj), ModelManifest)
    assert old.gate is not None and old.gate.families == {} and old.gate.p_value is None
    assert old.hyperparameters == {}
    gate = GateResult.model_validate(
        {
            "decision": "release",
            "families": {"exec": {"decision": "rules", "reason": "MAE 1.2 vs 1.06"}},
            "test": "paired_t vs champion",
            "p_value": 0.03,
            "confidence": 0.9,
        }
    )
    again = decode(encode(old.model_copy(update={"gate": gate})), ModelManifest)
    assert again.gate == gate


@pytest.fixture(scope="module")
def good_lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("gate-lake")
    write_frames(LocalObjectStore(root), synthetic_frames(2400, seed=21), payload=False)
    return str(root)


def _settings(tmp_path: Path, lake: str, **env: str) -> Settings:
    values = {
        "LAKE_URI": lake,
        "STORE_DIR": str(tmp_path / "store"),
        "TOPIC_PREFIX": unique_topic_prefix("gate"),
        "MANIFEST_HMAC_KEY": KEY,
        "TRAIN_PROFILE": "small",
        **env,
    }
    return Settings(**values)  # type: ignore[arg-type]


def _run(settings: Settings, tmp_path: Path, name: str, cfg: TrainConfig) -> RunResult:
    return run_training(
        settings,
        cfg,
        lakes=[("real", load_lake("real", settings.lake, settings))],
        report_dir=tmp_path / f"report-{name}",
        publish_topic=False,
        pit_engine="asof",
    )


def test_a_challenger_no_better_than_luck_is_refused(tmp_path: Path, good_lake: str) -> None:
    settings = _settings(tmp_path, good_lake)
    first = _run(settings, tmp_path, "first", CFG)
    assert first.status == "released", first.message
    m = first.manifest
    assert m is not None and m.gate is not None
    assert {f: d.decision for f, d in m.gate.families.items()} == dict.fromkeys(
        ("meta", "exec", "sizer"), "release"
    )
    assert m.gate.test == "paired_t vs rules" and m.gate.confidence == 0.9
    assert m.gate.p_value is not None and m.gate.p_value < 0.1  # learnable data beats the rules
    assert set(m.gate.baseline_metrics) >= {"meta", "exec", "sizer", "path_rules"}
    assert m.hyperparameters["meta"]["meta_trees"] == CFG.meta_trees
    # the same models again, with a gate that counts any change on the metrics as better:
    # exec and sizer "improve", but the holdout trades are identical, so luck cannot be ruled out
    lenient = replace(CFG, gate_min_improvement=-1.0)
    again = _run(settings, tmp_path, "again", lenient)
    assert again.status == "refused", again.message
    assert all(v.serving == "champion" for v in again.verdicts)
    luck = "not better than the champion's with 90% confidence (paired_t, p=1.0000"
    assert [v.family for v in again.verdicts if luck in v.reason] == ["exec", "sizer"]


def test_a_weak_champion_is_replaced_with_the_test_recorded(tmp_path: Path, good_lake: str) -> None:
    settings = _settings(tmp_path, good_lake, GATE_TEST="bootstrap", GATE_CONFIDENCE="0.95")
    cfg = TrainConfig.from_settings(settings)
    assert (cfg.gate_test, cfg.gate_confidence) == ("bootstrap", 0.95)
    weak = replace(cfg, meta_trees=1, meta_max_depth=1, exec_trees=2, exec_max_depth=1)
    champion = _run(settings, tmp_path, "weak", weak)
    assert champion.status == "released", champion.message
    better = _run(settings, tmp_path, "strong", cfg)
    assert better.status == "released", better.message
    m = better.manifest
    assert m is not None and m.gate is not None and m.gate.decision == "release"
    verdicts = {v.family: v for v in better.verdicts}
    assert verdicts["meta"].release and verdicts["meta"].champion is not None
    assert verdicts["meta"].challenger["log_loss"] < verdicts["meta"].champion["log_loss"]
    assert m.gate.test == "bootstrap vs champion" and m.gate.confidence == 0.95
    assert m.gate.p_value is not None and m.gate.p_value < 0.05
    assert any(r.startswith("sized R vs the champion: bootstrap") for r in m.gate.reasons)
    for v in better.verdicts:
        art = m.artifact(v.family)
        assert art is not None and (art.version == m.release) == v.release


def test_the_trader_serves_a_release_that_keeps_the_rules_for_some_families(
    tmp_path: Path,
) -> None:
    # shuffled R-multiples: nothing to learn for the meta or the execution model
    frames = synthetic_frames(2400, seed=21)
    out = frames["outcomes"].copy()
    out["r_multiple"] = np.random.default_rng(1).permutation(out["r_multiple"].to_numpy())
    frames["outcomes"] = out
    frames["features"] = _strategy_stats(out)
    write_frames(LocalObjectStore(tmp_path / "noise"), frames, payload=False)
    settings = _settings(tmp_path, str(tmp_path / "noise"))
    result = _run(settings, tmp_path, "noise", CFG)
    assert result.status == "released", result.message
    m = result.manifest
    assert m is not None and m.gate is not None
    fams = m.gate.families
    assert (fams["meta"].decision, fams["exec"].decision) == ("rules", "rules"), fams
    assert "does not beat the baseline" in fams["meta"].reason
    assert [a.family for a in m.artifacts] == ["sizer"]
    raw = LocalObjectStore(tmp_path / "store").get("models/manifest/latest.json")
    manifest, models = verify_release(raw, 0, Keyring.from_settings(settings), settings)
    assert manifest.release == m.release
    # the trader loads the sizer alone; meta and exec fall back to their rules
    assert models.families == ("sizer",) and models.meta is None and models.exec is None
