"""The evaluation's checkpoint: round trip, owner-only, and clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.evaluate.checkpoint import Checkpoint, CheckpointError, Step


def test_a_checkpoint_round_trips_and_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "run" / "checkpoint.json"
    ck = Checkpoint({"seed": 7, "symbols": ["ES"]}, 1_704_150_060)
    ck.steps = [
        Step(0, 1_704_236_460, "released", "ok", "r000001-x", 1, "models/manifest/1.json", ["learning", "frozen"], 9.5, 0.04),
        Step(1, 1_704_322_860, "failed", "too few rows"),
    ]  # fmt: skip
    ck.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    back = Checkpoint.load(path)
    assert back == ck
    assert [s.number for s in back.releases] == [0] and [s.number for s in back.tried] == [0]


def test_resuming_is_refused_with_what_differs(tmp_path: Path) -> None:
    ck = Checkpoint({"seed": 7, "feed": "sim", "retrain_every_s": 86400})
    ck.check_options({"seed": 7, "feed": "sim", "retrain_every_s": 86400})
    with pytest.raises(CheckpointError, match=r"retrain_every_s: 86400 then, 1800 now"):
        ck.check_options({"seed": 7, "feed": "sim", "retrain_every_s": 1800})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "nothing to resume"),
        ("{not json", "is not JSON"),
        (json.dumps({"version": 99, "options": {}}), "has version 99"),
        (json.dumps({"version": 1}), "is malformed"),
        (json.dumps({"version": 1, "options": {}, "steps": [{"number": 0}]}), "is malformed"),
    ],
)
def test_a_bad_checkpoint_is_named(tmp_path: Path, body: str | None, message: str) -> None:
    path = tmp_path / "checkpoint.json"
    if body is not None:
        path.write_text(body)
    with pytest.raises(CheckpointError, match=message):
        Checkpoint.load(path)
