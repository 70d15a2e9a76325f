"""A shortened `tradeloop demo` against the real broker, moto S3 and Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra.lake import read_topic
from tests.conftest import SettingsFactory
from tests.helpers import settings_env

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.s3, pytest.mark.redis]


@pytest.mark.timeout(420)
def test_shortened_demo_swaps_and_lands_every_signal_once(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(kafka=True, s3=True, redis=True, MODEL_POLL_SEC=2)
    env = settings_env(settings)
    env["TRADELOOP_HOME"] = str(tmp_path / "home")
    exe = Path(sys.executable).parent / "tradeloop"
    proc = subprocess.run(
        [
            str(exe), "demo", "--json",
            "--speed", "2400", "--train-after", "12", "--second-round-after", "4",
            "--synthetic-bars", "8000",
        ],
        env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)

    # a release was published and the trader hot-swapped to it while trading
    assert summary["releases"], summary["training_rounds"]
    assert summary["swaps"] >= 1
    assert summary["serving_release"] == summary["releases"][-1]["release"]
    assert summary["training_rounds"][1]["gate"] in {"release", "refused"}
    assert summary["store"].startswith("s3://")

    # every signal of the run is in the lake exactly once
    signals = read_topic(settings.lake, "signals", settings=settings)
    ids = signals.column("event_id").to_pylist()
    assert len(ids) == len(set(ids)) == summary["events_per_topic"]["signals"] > 0
    outcomes = read_topic(settings.lake, "outcomes", settings=settings)
    assert outcomes.num_rows == summary["events_per_topic"]["outcomes"]
    assert summary["lake_rows"]["features"] > 0

    # every artifact of every release lies in the versioned bucket
    for release in summary["releases"]:
        assert set(release["artifacts"]) == {"meta", "exec", "sizer"}
        assert all(uri.startswith(f"s3://{settings.bucket}/models/") for uri in release["artifacts"].values())
