"""Training killed between the artifact upload and the manifest write, then run again.

`tradeloop train --once` runs as a real process on a synthetic lake with the crash
point `training.after_upload_before_manifest` set: it dies with the artifacts
uploaded and no manifest. The model store stays consistent (no `latest.json`, no
manifest naming missing artifacts: the orphaned artifacts serve nobody), and the next
run (the same command, run in this process: no second interpreter start-up) releases
a set the trader verifies, every artifact matching its manifest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from infra.crash import CRASH_ENV, CRASH_EXIT_CODE
from infra.objectstore import LocalObjectStore
from infra.settings import Settings, get_settings
from infra.signing import Keyring
from tests.helpers import unique_topic_prefix
from tests.kit.lake import synthetic_frames, write_frames
from trader.delivery.release import verify_release
from training.release import Registry

KEY = "crash-test-key-0123456789abcdef"
TRADELOOP = str(Path(sys.executable).with_name("tradeloop"))


ARGS = ["--once", "--profile", "small", "--no-progress", "--pit-engine", "asof", "--no-topic"]


def _train(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRADELOOP, "train", *ARGS], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_killed_between_upload_and_manifest_the_store_stays_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = tmp_path / "lake"
    write_frames(LocalObjectStore(lake), synthetic_frames(1200, seed=21), payload=False)
    values = {
        "LAKE_URI": str(lake),
        "STORE_DIR": str(tmp_path / "store"),
        "MANIFEST_HMAC_KEY": KEY,
        "TOPIC_PREFIX": unique_topic_prefix("crash"),
        "TRAIN_REPORT_DIR": str(tmp_path / "reports"),
        "TRAIN_PROFILE": "small",
    }
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    env.update(values, TRADELOOP_HOME=str(tmp_path / "home"))
    store = LocalObjectStore(tmp_path / "store")
    settings = Settings(**values)  # type: ignore[arg-type]

    crashed = _train({**env, CRASH_ENV: "training.after_upload_before_manifest:1"}, tmp_path)
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stdout[-2000:] + crashed.stderr[-2000:]
    assert "crash point training.after_upload_before_manifest: dying" in crashed.stderr
    orphans = [k for k in store.list("models/") if k.endswith(".onnx")]
    assert orphans  # the artifacts were uploaded...
    assert not [k for k in store.list("models/manifest/")]  # ...and no manifest names them
    assert Registry(settings).latest() is None

    from training.cli import train

    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TRADELOOP_HOME", env["TRADELOOP_HOME"])
    monkeypatch.delenv(CRASH_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    try:
        again = CliRunner().invoke(train, ARGS)
    finally:
        get_settings.cache_clear()
    assert again.exit_code == 0, again.output[-3000:]
    assert "[default] released" in again.output
    raw = store.get("models/manifest/latest.json")
    manifest, _models = verify_release(raw, 0, Keyring.from_settings(settings), settings)
    assert [a.family for a in manifest.artifacts] == ["meta", "exec", "sizer"]
    for art in manifest.artifacts:  # every artifact the manifest names is the one it hashed
        blob = store.get(f"models/{art.family}/{manifest.release}/{art.family}.onnx")
        assert hashlib.sha256(blob).hexdigest() == art.sha256 and len(blob) == art.size_bytes
