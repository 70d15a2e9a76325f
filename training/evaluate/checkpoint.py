"""The evaluation's checkpoint: what defines the run and what each retrain step did.

Written (atomically, owner-only) after every retrain step. `--resume` replays the
walk to the last step with the recorded releases swapped in at the recorded
market times (no retraining: the engines are deterministic for the same bars and
models), then carries on.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.config import TrainingError

__all__ = ["Checkpoint", "CheckpointError", "Step"]

VERSION = 1


class CheckpointError(TrainingError):
    """Raise when a checkpoint is unreadable or belongs to another run."""


@dataclass
class Step:
    """One retrain step: its cut (market time), the training outcome and the swaps."""

    number: int
    cut_s: int
    status: str  # released | refused | failed
    message: str
    release: str = ""
    sequence: int = 0
    manifest_key: str = ""
    swapped: list[str] = field(default_factory=list)
    train_s: float = 0.0
    gate_p_value: float | None = None


@dataclass
class Checkpoint:
    """The run's defining options, the first bar's time and the steps done."""

    options: dict[str, Any]
    first_ts_s: int | None = None
    steps: list[Step] = field(default_factory=list)
    version: int = VERSION

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        """Read a checkpoint; raise `CheckpointError` naming what is wrong."""
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"no checkpoint at {path}: nothing to resume") from None
        except ValueError as exc:
            raise CheckpointError(f"checkpoint {path} is not JSON: {exc}") from None
        if raw.get("version") != VERSION:
            raise CheckpointError(f"checkpoint {path} has version {raw.get('version')}")
        try:
            steps = [Step(**s) for s in raw.get("steps", [])]
            return cls(raw["options"], raw.get("first_ts_s"), steps)
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {path} is malformed: {exc}") from None

    def check_options(self, options: dict[str, Any]) -> None:
        """Refuse to resume with options that define another run."""
        diff = {k: (self.options.get(k), v) for k, v in options.items() if self.options.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in sorted(diff.items()))
            raise CheckpointError(f"--resume with other options than the checkpoint's ({detail})")

    def save(self, path: Path) -> None:
        """Write the checkpoint atomically, readable by the owner only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        body = json.dumps(asdict(self), indent=2)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(body)
        os.replace(tmp, path)

    @property
    def tried(self) -> list[Step]:
        """Return the steps that trained a candidate and gated it (released or refused)."""
        return [s for s in self.steps if s.status != "failed"]

    @property
    def releases(self) -> list[Step]:
        """Return the steps that published a release."""
        return [s for s in self.steps if s.status == "released"]
