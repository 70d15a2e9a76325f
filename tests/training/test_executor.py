"""Training on a Ray cluster: the same models and trials as in this process, from the CLI too.

The cluster is a real one started by the test (`ray start --head --block`, two CPUs,
on loopback) and stopped after the module.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from click.testing import CliRunner

from infra.objectstore import LocalObjectStore, store_for_uri
from infra.settings import Settings, get_settings
from tests.helpers import unique_topic_prefix, wait_until
from tests.kit import ray_probe
from tests.kit.lake import synthetic_frames, write_frames
from training.config import TrainConfig
from training.datasets import LakeFrames, TrainingData, build_training_data, load_lake
from training.executor import ClusterError, LocalExecutor, RayExecutor, connect, task_settings
from training.pipeline import fit_all
from training.trained import TrainedSet
from training.tune import prepare, storage_url, tune

CFG = TrainConfig.for_profile("small")
KEY = "ray-test-key-0123456789abcdef"
RAY = str(Path(sys.executable).with_name("ray"))
# on one machine Ray would advertise the host's interface address; keep it on loopback
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """Start a two-CPU Ray head on loopback; yield its address; stop it and its processes."""
    import importlib

    saved = {k: os.environ.get(k) for k in LOOPBACK}
    os.environ.update(LOOPBACK)  # read when ray is imported, by this driver too
    ray = importlib.import_module("ray")
    constants = importlib.import_module("ray._private.ray_constants")
    assert not constants.ENABLE_RAY_CLUSTER, "ray was imported before this fixture"
    assert not ray.is_initialized()
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="tlray")  # short: Ray's socket paths have a length limit
    log = Path(temp) / "head.log"
    with log.open("w") as out:
        head = subprocess.Popen(
            [
                RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                "--disable-usage-stats", f"--temp-dir={temp}",
            ],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **LOOPBACK},
            start_new_session=True,
        )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        wait_until(
            lambda: head.poll() is not None or "Ray runtime started" in log.read_text(),
            60,
            interval_s=0.2,
            what="ray start",
        )
        assert head.poll() is None, log.read_text()
        yield address
    finally:
        ray.shutdown()
        head.send_signal(signal.SIGTERM)  # --block: the head drains and stops what it started
        try:
            head.wait(timeout=45)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("ray-lake")
    write_frames(LocalObjectStore(root), synthetic_frames(1600, seed=11), payload=False)
    return str(root)


def _settings(tmp_path: Path, lake: str, **env: str) -> Settings:
    values = {
        "LAKE_URI": lake,
        "STORE_DIR": str(tmp_path / "store"),
        "TOPIC_PREFIX": unique_topic_prefix("ray"),
        "MANIFEST_HMAC_KEY": KEY,
        "TRAIN_PROFILE": "small",
        **env,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def data(lake: str, tmp_path_factory: pytest.TempPathFactory) -> TrainingData:
    settings = _settings(tmp_path_factory.mktemp("ray-data"), lake)
    return build_training_data([("real", load_lake("real", lake, settings))], CFG, "asof")


def _outputs(t: TrainedSet) -> dict[str, np.ndarray]:
    """Return each family's holdout output and probe output."""
    out = {}
    for fam in ("meta", "exec", "sizer"):
        exported = getattr(t, fam).exported
        out[fam] = exported.holdout_output
        out[f"{fam}_probe"] = np.asarray(exported.probe_output)
    return out


def test_fit_all_on_ray_equals_the_local_fit(cluster: str, data: TrainingData) -> None:
    run = connect(cluster)
    assert isinstance(run, RayExecutor) and run.slots() == 2
    local = fit_all(data, CFG, executor=LocalExecutor())
    remote = fit_all(data, CFG, executor=run)
    for name, value in _outputs(local).items():
        np.testing.assert_array_equal(value, _outputs(remote)[name], err_msg=name)
    for fam in ("meta", "exec", "sizer"):
        a, b = getattr(local, fam), getattr(remote, fam)
        assert a.holdout_metrics == b.holdout_metrics and a.fold_metrics == b.fold_metrics
    assert set(remote.timings_s) >= {"meta_fit", "exec_fit", "sizer_fit"}
    # the tasks ran in the cluster's worker processes; a task's own error reaches the caller
    x = run.share(np.arange(10.0))
    results = run.gather([run.submit(ray_probe.where, x) for _ in range(2)])
    assert all(pid != os.getpid() and total == 45.0 for pid, total in results)
    with pytest.raises(ValueError, match="bad row 7"):
        run.gather([run.submit(ray_probe.fails)])


def test_dataset_shards_on_ray_equal_the_local_build(
    cluster: str, lake: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(s3=True, MANIFEST_HMAC_KEY=KEY)
    store = store_for_uri(settings.lake, settings)
    write_frames(store, synthetic_frames(900, seed=12), payload=False)

    def lakes() -> list[tuple[str, LakeFrames]]:
        # an S3 lake is a shard a task reads and joins; a lake on this disk is joined here
        return [
            ("real", load_lake("real", settings.lake, settings)),
            ("synthetic", load_lake("synthetic", lake, settings)),
        ]

    local = build_training_data(lakes(), CFG, "asof")
    remote = build_training_data(lakes(), CFG, "asof", executor=connect(cluster))
    pd.testing.assert_frame_equal(local.signals, remote.signals)
    pd.testing.assert_frame_equal(local.groups, remote.groups)
    assert local.counts == remote.counts and remote.counts["rows_real"] > 0
    # the store's credentials are the only secrets a task receives
    shipped = task_settings(settings)
    assert shipped.manifest_hmac_key.get_secret_value() == ""
    assert shipped.aws_secret_access_key == settings.aws_secret_access_key


def test_tune_on_ray_asks_the_same_trials_as_here(
    cluster: str, data: TrainingData, tmp_path: Path, lake: str
) -> None:
    def trials(home: str, run: object) -> list[tuple[int, dict[str, float], float | None]]:
        settings = _settings(tmp_path, lake, OPTUNA_STORAGE=f"sqlite:///{tmp_path / home}.db")
        tune(settings, data, CFG, families=("exec",), n_trials=4, executor=run, parallel=2)  # type: ignore[arg-type]
        out = []
        for fam in ("exec",):
            study = optuna.load_study(study_name=f"tradeloop-{fam}", storage=storage_url(settings))
            out += [(t.number, t.params, t.value) for t in study.trials]
        return out

    local, remote = trials("local", LocalExecutor()), trials("ray", connect(cluster))
    assert len(local) == 4 and local == remote
    # the sizer's study reads out-of-sample predictions of fold fits that ran on the cluster
    a, b = prepare("sizer", data, CFG), prepare("sizer", data, CFG, connect(cluster))
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)


def test_train_cli_with_ray_releases_and_an_unreachable_cluster_is_named(
    cluster: str, lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.cli import train

    env = {
        "LAKE_URI": lake,
        "STORE_DIR": str(tmp_path / "store"),
        "MANIFEST_HMAC_KEY": KEY,
        "TOPIC_PREFIX": unique_topic_prefix("raycli"),
        "TRAIN_REPORT_DIR": str(tmp_path / "reports"),
        "TRAIN_RAY_ADDRESS": cluster,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    args = ["--once", "--profile", "small", "--no-progress", "--pit-engine", "asof", "--no-topic"]
    try:
        out = CliRunner().invoke(train, args)
        assert out.exit_code == 0, out.output
        assert "[default] released" in out.output
        dead = f"127.0.0.1:{_free_port()}"
        out = CliRunner().invoke(train, [*args, "--ray", dead])
        assert out.exit_code == 1
        assert f"cannot reach the Ray cluster at '{dead}'" in out.output
    finally:
        get_settings.cache_clear()
    with pytest.raises(ClusterError, match="expected `auto` or HOST:PORT"):
        connect("nowhere")
