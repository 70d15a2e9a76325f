"""The GitHub Actions workflow that trains every 30 minutes: its structure."""

from __future__ import annotations

from typing import Any

import yaml

from tests import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "train.yml"
SEED_SECRETS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "S3_BUCKET",
    "MANIFEST_HMAC_KEY",
)


def _load() -> dict[Any, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(doc, dict)
    return doc


def test_triggers_every_30_minutes_and_on_demand() -> None:
    doc = _load()
    on: dict[str, Any] = doc.get("on", doc.get(True)) or {}  # YAML 1.1 reads a bare `on` as true
    assert on["schedule"] == [{"cron": "*/30 * * * *"}]
    assert "workflow_dispatch" in on
    assert doc["concurrency"]["cancel-in-progress"] is False


def test_secrets_install_skip_switch_and_train_command() -> None:
    job = _load()["jobs"]["train"]
    env = job["env"]
    for name in SEED_SECRETS:
        assert env[name] == f"${{{{ secrets.{name} }}}}"
    assert env["SKIP_TRAINING_FILE"] == "SKIP_TRAINING"
    steps = job["steps"]
    names = [s.get("name", s.get("uses", "")) for s in steps]
    skip = next(s for s in steps if s.get("id") == "skip")
    assert "SKIP_TRAINING" in skip["run"]
    install = next(s for s in steps if s.get("name") == "Install")
    assert "-c constraints.txt" in install["run"] and ".[training" in install["run"]
    train = next(s for s in steps if s.get("name") == "Train, gate and publish")
    assert train["run"].startswith("tradeloop train --once")
    # every step after the skip check is conditional on it
    after = steps[names.index(skip.get("name")) + 1 :]
    assert all("steps.skip.outputs.skip" in s.get("if", "") for s in after)
    assert any(s.get("uses", "").startswith("actions/setup-python") for s in steps)
    assert (ROOT / "constraints.txt").exists()
