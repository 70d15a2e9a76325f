"""Whole training runs on a local store: release, gate, bad data, parity, rollback, CLI."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from features.vectors import MODEL_FEATURES
from infra.objectstore import LocalObjectStore
from infra.settings import Settings, get_settings
from infra.signing import Keyring
from tests.helpers import unique_topic_prefix
from tests.kit.lake import _strategy_stats, synthetic_frames, write_frames
from trader.delivery.release import ReleaseRejected, verify_release
from training.config import TrainConfig
from training.datasets import load_lake
from training.pipeline import RunResult, run_training
from training.release import Registry, verify_manifest

CFG = TrainConfig.for_profile("small")
KEY = "pipeline-test-key-0123456789"


def _write(root: Path, frames: dict[str, pd.DataFrame]) -> str:
    write_frames(LocalObjectStore(root), frames, payload=False)
    return str(root)


def _noise(frames: dict[str, pd.DataFrame], seed: int) -> dict[str, pd.DataFrame]:
    """Return frames whose R-multiples are shuffled: nothing to learn."""
    out = dict(frames)
    o = frames["outcomes"].copy()
    o["r_multiple"] = np.random.default_rng(seed).permutation(o["r_multiple"].to_numpy())
    out["outcomes"] = o
    out["features"] = _strategy_stats(o)
    return out


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("lakes")
    good = synthetic_frames(2400, seed=21)
    bad = synthetic_frames(600, seed=22)
    bad["signals"].loc[10, "ema_spread"] = np.nan
    return {
        "good": _write(base / "good", good),
        "noise": _write(base / "noise", _noise(good, 1)),
        "nan": _write(base / "nan", bad),
    }


def _settings(tmp_path: Path, lake: str, **env: str) -> Settings:
    values = {
        "LAKE_URI": lake,
        "STORE_DIR": str(tmp_path / "store"),
        "TOPIC_PREFIX": unique_topic_prefix("tp"),
        "MANIFEST_HMAC_KEY": KEY,
        "TRAIN_PROFILE": "small",
        **env,
    }
    return Settings(**values)  # type: ignore[arg-type]


def _run(
    settings: Settings, tmp_path: Path, name: str, cfg: TrainConfig = CFG, lake: str | None = None
):  # type: ignore[no-untyped-def]
    frames = load_lake("real", lake or settings.lake, settings)
    return run_training(
        settings,
        cfg,
        lakes=[("real", frames)],
        report_dir=tmp_path / f"report-{name}",
        publish_topic=False,
        pit_engine="asof",
    )


@dataclass(frozen=True)
class Store:
    """A store's settings, its directory and the runs that filled it, in order."""

    settings: Settings
    root: Path
    runs: tuple[RunResult, ...]
    sequences_between: tuple[list[int], ...] = ()


@pytest.fixture(scope="module")
def first_store(tmp_path_factory: pytest.TempPathFactory, lakes: dict[str, str]) -> Store:
    """One run on the learnable lake into an empty store (shared: the tests only add to it)."""
    root = tmp_path_factory.mktemp("first")
    settings = _settings(root, lakes["good"])
    return Store(settings, root, (_run(settings, root, "first"),))


@pytest.fixture(scope="module")
def gated_store(tmp_path_factory: pytest.TempPathFactory, lakes: dict[str, str]) -> Store:
    """Noise, the same noise again, then the learnable lake, into one store.

    The gate test reads the three runs; the models CLI test works on the store they left
    (releases 1 and 2: the second run was refused).
    """
    root = tmp_path_factory.mktemp("gated")
    settings = _settings(root, lakes["noise"])
    first = _run(settings, root, "noise")
    again = _run(settings, root, "again")
    between = Registry(settings).sequences()
    better = _run(settings, root, "better", lake=lakes["good"])
    return Store(settings, root, (first, again, better), (between,))


def test_first_run_releases_three_models_the_trader_accepts(first_store: Store) -> None:
    settings, tmp_path = first_store.settings, first_store.root
    (result,) = first_store.runs
    assert result.status == "released", result.message
    m = result.manifest
    assert m is not None and m.sequence == 1 and m.kind == "release" and m.key_id == "k1"
    assert m.gate is not None and m.gate.decision == "first"
    assert set(m.gate.challenger_metrics) == {"meta", "exec", "sizer"}
    assert m.train_window_start is not None and m.train_window_end is not None
    assert [a.family for a in m.artifacts] == ["meta", "exec", "sizer"]
    store = LocalObjectStore(tmp_path / "store")
    for art in m.artifacts:
        assert art.feature_names == MODEL_FEATURES[art.family]
        blob = store.get(f"models/{art.family}/{m.release}/{art.family}.onnx")
        assert hashlib.sha256(blob).hexdigest() == art.sha256 and len(blob) == art.size_bytes
        assert art.probe_input and art.probe_output
        assert art.metrics["parity_max_abs_diff"] < 1e-4
    meta = m.artifact("meta")
    assert meta is not None and {"log_loss", "auc"} <= set(meta.metrics)
    # the synthetic lake is learnable: the models beat chance on the holdout
    assert meta.metrics["auc"] > 0.55
    ex = m.artifact("exec")
    assert ex is not None and ex.metrics["mae"] < ex.metrics["mae_baseline"]
    # latest.json and the history hold the same signed bytes; the trader's own checks pass
    raw = store.get("models/manifest/latest.json")
    assert raw == store.get("models/manifest/1.json")
    assert verify_manifest(raw, Keyring.from_settings(settings)) == "k1"
    manifest, _model_set = verify_release(raw, 0, Keyring.from_settings(settings), settings)
    assert manifest.release == m.release
    with pytest.raises(ReleaseRejected) as err:
        verify_release(raw, 1, Keyring.from_settings(settings), settings)
    assert err.value.code == "stale_sequence"
    # the report
    rep = result.report_dir
    assert rep is not None
    for name in ("meta.json", "exec.json", "sizer.json", "run.json"):
        doc = json.loads((rep / name).read_text())
        assert doc
    assert len(json.loads((rep / "meta.json").read_text())["walk_forward"]) == CFG.folds
    for png in ("calibration.png", "importance.png", "sizer.png"):
        assert (rep / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gate_keeps_the_champion_and_replaces_a_worse_one(gated_store: Store) -> None:
    first, again, better = gated_store.runs
    assert first.status == "released"
    # the same data again: nothing improves, nothing is released
    assert again.status == "refused", again.message
    assert all(not v.release for v in again.verdicts)
    assert gated_store.sequences_between == ([1],)
    # real structure in the data: the challenger beats the noise-trained champion
    assert better.status == "released", better.message
    m = better.manifest
    assert m is not None and m.sequence == 2 and m.gate is not None and m.gate.decision == "release"
    verdicts = {v.family: v for v in better.verdicts}
    assert verdicts["meta"].release and verdicts["exec"].release
    # on noise neither meta nor exec beat its trivial baseline: the champion served the
    # rules for them, so the challengers were held to the baselines and the sizer champion
    assert first.manifest is not None
    assert [a.family for a in first.manifest.artifacts] == ["sizer"]
    assert first.manifest.gate is not None
    assert first.manifest.gate.families["meta"].decision == "rules"
    assert verdicts["meta"].champion is None and verdicts["meta"].baseline is not None
    assert verdicts["meta"].challenger["chosen_r"] > verdicts["meta"].baseline["chosen_r"]
    assert set(m.gate.champion_metrics) == {"sizer"}
    assert m.gate.p_value is not None and m.gate.p_value < 1 - CFG.gate_confidence
    # a family that did not improve keeps serving the champion's artifact
    for v in better.verdicts:
        art = m.artifact(v.family)
        assert art is not None
        assert (art.version == m.release) == v.release


def test_bad_data_and_failed_parity_release_nothing(tmp_path: Path, lakes: dict[str, str]) -> None:
    settings = _settings(tmp_path, lakes["nan"])
    result = _run(settings, tmp_path, "nan")
    assert result.status == "failed"
    assert "NaN market features" in result.message and "ema_spread" in result.message
    settings = _settings(tmp_path, lakes["good"])
    strict = TrainConfig.for_profile("small", parity_tol=0.0)  # no export can pass
    result = _run(settings, tmp_path, "parity", cfg=strict)
    assert result.status == "failed" and "max abs diff" in result.message
    assert Registry(settings).latest() is None
    assert not LocalObjectStore(tmp_path / "store").list("models/")
    unsigned = _settings(tmp_path, lakes["good"], MANIFEST_HMAC_KEY="")
    assert _run(unsigned, tmp_path, "unsigned").status == "failed"


def test_models_cli_list_show_verify_rollback(
    gated_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, tmp_path = gated_store.settings, gated_store.root
    assert [r.status for r in gated_store.runs] == ["released", "refused", "released"]
    for name, value in {
        "LAKE_URI": settings.lake,
        "STORE_DIR": str(tmp_path / "store"),
        "MANIFEST_HMAC_KEY": KEY,
        "TOPIC_PREFIX": settings.topic_prefix,
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        from training.cli import models

        runner = CliRunner()
        out = runner.invoke(models, ["list", "--json"])
        assert out.exit_code == 0, out.output
        listed = json.loads(out.output)
        assert [r["sequence"] for r in listed["releases"]] == [1, 2]
        first_release = listed["releases"][0]["release"]
        out = runner.invoke(models, ["show", "1"])
        assert out.exit_code == 0 and first_release in out.output and "gate    first" in out.output
        out = runner.invoke(models, ["verify"])
        assert out.exit_code == 0, out.output
        assert "signature ok" in out.output and out.output.count("probe ok") == 3
        out = runner.invoke(
            models, ["rollback", first_release, "--reason", "bad fills", "--no-topic"]
        )
        assert out.exit_code == 0, out.output
        reg = Registry(get_settings())
        latest = reg.latest()
        assert latest is not None and latest.sequence == 3 and latest.kind == "rollback"
        assert latest.rollback_of == listed["releases"][1]["release"]
        assert latest.artifacts == reg.find("1").artifacts
        assert latest.gate is not None and "bad fills" in latest.gate.reasons[0]
        raw = reg.latest_raw()
        assert raw is not None
        manifest, _models = verify_release(raw, 2, Keyring.from_settings(settings), settings)
        assert manifest.kind == "rollback"
        # tampering with the store's latest.json is caught by `models verify`
        obj = json.loads(raw)
        obj["artifacts"][0]["metrics"]["auc"] = 0.99
        LocalObjectStore(tmp_path / "store").put(
            "models/manifest/latest.json", json.dumps(obj).encode()
        )
        out = runner.invoke(models, ["verify"])
        assert out.exit_code != 0 and "bad_signature" in out.output
        out = runner.invoke(models, ["rollback", "nope"])
        assert out.exit_code != 0 and "no release 'nope'" in out.output
    finally:
        get_settings.cache_clear()


def test_per_symbol_model_set_has_its_own_latest(first_store: Store, tmp_path: Path) -> None:
    settings = first_store.settings
    assert [r.status for r in first_store.runs] == ["released"]
    es = load_lake("real", settings.lake, settings, symbols=["ES"])
    assert set(es.signals["symbol"]) == {"ES"}
    result = run_training(
        settings,
        CFG,
        lakes=[("real", es)],
        model_set="ES",
        publish_topic=False,
        pit_engine="asof",
        report_dir=tmp_path / "report-es",
    )
    assert result.status == "released", result.message
    reg = Registry(settings)
    es_latest, default_latest = reg.latest("ES"), reg.latest()
    assert es_latest is not None and default_latest is not None
    assert (es_latest.model_set, es_latest.sequence) == ("ES", 2)  # sequences are global
    assert (default_latest.model_set, default_latest.sequence) == ("default", 1)
    assert es_latest.gate is not None and es_latest.gate.decision == "first"
    assert LocalObjectStore(first_store.root / "store").exists(
        "models/manifest/sets/ES/latest.json"
    )


def test_train_once_cli_releases_and_fails_on_bad_data(
    tmp_path: Path, lakes: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.cli import train

    env = {
        "LAKE_URI": lakes["good"],
        "STORE_DIR": str(tmp_path / "store"),
        "MANIFEST_HMAC_KEY": KEY,
        "TOPIC_PREFIX": unique_topic_prefix("cli"),
        "TRAIN_REPORT_DIR": str(tmp_path / "reports"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    try:
        args = [
            "--once",
            "--profile",
            "small",
            "--no-progress",
            "--pit-engine",
            "asof",
            "--no-topic",
        ]
        out = CliRunner().invoke(train, args)
        assert out.exit_code == 0, out.output
        assert "[default] released" in out.output and "meta   release" in out.output
        reports = list((tmp_path / "reports").iterdir())
        assert len(reports) == 1 and (reports[0] / "run.json").exists()
        assert Registry(get_settings()).latest() is not None
        monkeypatch.setenv("LAKE_URI", lakes["nan"])
        get_settings.cache_clear()
        out = CliRunner().invoke(train, args)
        assert out.exit_code == 1 and "failed: NaN market features" in out.output
    finally:
        get_settings.cache_clear()
