"""`tradeloop tune`: studies shared through PostgreSQL, the profile the trainer then reads."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from infra.objectstore import LocalObjectStore
from infra.settings import Settings, get_settings
from tests.helpers import unique_topic_prefix
from tests.kit.lake import synthetic_frames, write_frames
from training.config import TrainConfig, load_params
from training.datasets import build_training_data, load_lake
from training.pipeline import run_training
from training.tune import StudyResult, storage_url, tune

CFG = TrainConfig.for_profile("small")
PG_SERVER = "postgresql://127.0.0.1"
KEY = "tune-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("tune-lake")
    write_frames(LocalObjectStore(root), synthetic_frames(1600, seed=5), payload=False)
    return str(root)


def _settings(tmp_path: Path, lake: str, **env: str) -> Settings:
    values = {
        "LAKE_URI": lake,
        "STORE_DIR": str(tmp_path / "store"),
        "TOPIC_PREFIX": unique_topic_prefix("tune"),
        "MANIFEST_HMAC_KEY": KEY,
        "TRAIN_PROFILE": "small",
        **env,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL (so workers race to create the tables)."""
    import psycopg

    name = f"tune_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{PG_SERVER}/test", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with psycopg.connect(f"{PG_SERVER}/test", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_two_workers_share_one_postgresql_study(tmp_path: Path, lake: str, pg_url: str) -> None:
    settings = _settings(tmp_path, lake, OPTUNA_STORAGE=pg_url)
    assert storage_url(settings) == pg_url
    data = build_training_data([("real", load_lake("real", lake, settings))], CFG, "asof")
    prefix = unique_topic_prefix("study")
    results: dict[str, list[StudyResult]] = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            results[name] = tune(
                settings, data, CFG, families=["exec"], n_trials=3, study_prefix=prefix, worker=name
            )
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and set(results) == {"a", "b"}, errors
    study = optuna.load_study(study_name=f"{prefix}-exec", storage=pg_url)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 6
    assert sorted(t.user_attrs["worker"] for t in done) == ["a", "a", "a", "b", "b", "b"]
    # the worker that finished last saw the other's trials; a late joiner sees all of them
    assert max(r[0].trials for r in results.values()) == 6
    late = tune(settings, data, CFG, families=["exec"], n_trials=1, study_prefix=prefix)
    assert late[0].trials == 7 and late[0].value <= study.best_value
    assert set(late[0].params) == {
        "exec_trees",
        "exec_max_depth",
        "exec_learning_rate",
        "exec_subsample",
        "exec_max_features",
    }


def test_tune_cli_writes_the_profile_the_trainer_and_the_manifest_use(
    tmp_path: Path, lake: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.tune_cli import tune as tune_cli

    profile = tmp_path / "profile.json"
    env = {
        "LAKE_URI": lake,
        "STORE_DIR": str(tmp_path / "store"),
        "TOPIC_PREFIX": unique_topic_prefix("tunecli"),
        "TRADELOOP_HOME": str(tmp_path / "home"),
        "MANIFEST_HMAC_KEY": KEY,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    get_settings.cache_clear()
    try:
        args = [
            "--trials",
            "2",
            "--profile",
            "small",
            "--pit-engine",
            "asof",
            "--out",
            str(profile),
        ]
        out = CliRunner().invoke(tune_cli, args)
        assert out.exit_code == 0, out.output
        assert (tmp_path / "home" / "optuna.db").exists()  # SQLite by default
        for fam in ("meta", "exec", "sizer"):
            assert f"tradeloop-{fam} (sqlite, 2 trials)" in out.output
        doc = json.loads(profile.read_text())
        assert set(doc["params"]) == {"meta", "exec", "sizer"}
        assert doc["studies"]["sizer"]["trials"] == 2
        # a second run joins the same SQLite studies
        out = CliRunner().invoke(tune_cli, [*args, "--families", "exec", "--trials", "1"])
        assert out.exit_code == 0 and "tradeloop-exec (sqlite, 3 trials)" in out.output
        assert set(json.loads(profile.read_text())["params"]) == {"meta", "exec", "sizer"}
        out = CliRunner().invoke(tune_cli, [*args, "--families", "risk"])
        assert out.exit_code == 1 and "unknown model family 'risk'" in out.output
    finally:
        get_settings.cache_clear()
    # the trainer reads the profile over the defaults; the release records the values
    settings = _settings(tmp_path, lake, TRAIN_PARAMS_FILE=str(profile))
    cfg = TrainConfig.from_settings(settings)
    tuned = load_params(profile)
    assert tuned and all(getattr(cfg, k) == v for k, v in tuned.items())
    assert isinstance(cfg.meta_trees, int)
    result = run_training(
        settings,
        cfg,
        lakes=[("real", load_lake("real", lake, settings))],
        report_dir=tmp_path / "report",
        publish_topic=False,
        pit_engine="asof",
    )
    assert result.manifest is not None, result.message
    recorded = result.manifest.hyperparameters
    assert all(recorded[f][k] == float(v) for f, d in doc["params"].items() for k, v in d.items())


def test_a_bad_profile_is_refused_with_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"params": {"meta": {"meta_depth": 3}}}))
    with pytest.raises(ValueError, match=r"meta\.meta_depth is not tunable"):
        load_params(bad)
    bad.write_text(json.dumps({"params": {"exec": {"exec_trees": "many"}}}))
    with pytest.raises(ValueError, match="is not a number"):
        load_params(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match=r"p\.json"):
        load_params(bad)
