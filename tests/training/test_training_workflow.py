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


LOCK = ROOT / "requirements" / "train.lock"


def _requirements(text: str) -> dict[str, tuple[str, list[str]]]:
    """Return {name: (pinned version, hashes)} of a pip-compile lock."""
    out: dict[str, tuple[str, list[str]]] = {}
    joined = text.replace("\\\n", " ")
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        spec, *opts = line.split()
        name, sep, version = spec.partition("==")
        assert sep, f"not pinned with ==: {spec}"
        hashes = [o.removeprefix("--hash=sha256:") for o in opts if o.startswith("--hash=sha256:")]
        out[name.lower()] = (version, hashes)
    return out


def test_installs_only_hashed_pins_from_the_lock() -> None:
    steps = _load()["jobs"]["train"]["steps"]
    install = next(s for s in steps if s.get("name") == "Install")["run"]
    assert "--require-hashes" in install and "-r requirements/train.lock" in install
    assert "--no-deps" in install  # nothing outside the lock is resolved
    # the editable install of the checkout resolves nothing either
    editable = next(line for line in install.splitlines() if "-e " in line)
    assert "--no-deps" in editable
    reqs = _requirements(LOCK.read_text())
    assert len(reqs) > 50
    unhashed = [n for n, (_, hashes) in reqs.items() if not hashes]
    assert unhashed == []
    assert all(len(h) == 64 for _, hashes in reqs.values() for h in hashes)
    # CPU torch at the version constraints.txt pins
    pinned = dict(
        line.split("==") for line in (ROOT / "constraints.txt").read_text().split() if "==" in line
    )
    assert reqs["torch"][0].split("+")[0] == pinned["torch"] == "2.13.0"
    assert not any(n.startswith("nvidia-") for n in reqs)  # no CUDA wheels
    for package in ("aiokafka", "onnx", "cryptography", "model-signing", "pytest"):
        assert package in reqs, package


def test_release_gate_tests_run_before_publishing() -> None:
    steps = _load()["jobs"]["train"]["steps"]
    names = [s.get("name", s.get("uses", "")) for s in steps]
    gate = names.index("Release gate tests")
    assert names.index("Install") < gate < names.index("Train, gate and publish")
    assert steps[gate]["run"].startswith("make test-release")
    makefile = (ROOT / "Makefile").read_text()
    assert "\ntest-release:" in makefile
    block = makefile.split("RELEASE_TESTS :=", 1)[1].split("\n\n", 1)[0]
    paths = [p for p in block.replace("\\", " ").split() if p.startswith("tests/")]
    assert paths and all((ROOT / p).exists() for p in paths), paths
    # the Ed25519 key signs; it comes from a secret and is checked before training
    env = _load()["jobs"]["train"]["env"]
    assert env["MANIFEST_ED25519_PRIVATE_KEY"] == "${{ secrets.MANIFEST_ED25519_PRIVATE_KEY }}"
    check = next(s for s in steps if s.get("name") == "Check secrets")["run"]
    assert "MANIFEST_ED25519_PRIVATE_KEY" in check


def test_the_lock_covers_every_dependency_the_workflow_installs() -> None:
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in ("training", "streams", "dev"):
        wanted += project["optional-dependencies"][extra]
    reqs = _requirements(LOCK.read_text())

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    locked = {norm(n) for n in reqs}
    names = {norm(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]) for spec in wanted}
    assert names - locked == set(), "regenerate requirements/train.lock (docs/operations.md)"
