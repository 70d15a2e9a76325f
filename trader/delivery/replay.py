"""The trader's anti-replay memory: the highest accepted release per model set, on disk.

One small JSON file (`RELEASE_STATE_PATH`) maps each model set to the sequence, the
release and the sha256 of the manifest bytes last accepted. It is replaced atomically
(write a temporary file, fsync it, rename, fsync the directory), so after a crash it
holds the old or the new record, never half of one, and it survives restarts: an
older validly-signed manifest replayed after a restart is refused (`replayed`).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["AcceptedRelease", "ReleaseLedger", "ReleaseStateError"]


class ReleaseStateError(RuntimeError):
    """Raise when the state file exists but cannot be read as release records."""


@dataclass(frozen=True, slots=True)
class AcceptedRelease:
    """What a trader accepted last for one model set."""

    sequence: int
    release: str
    sha256: str


class ReleaseLedger:
    """Read and durably record the last accepted release per model set."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._records = self._read()

    def _read(self) -> dict[str, AcceptedRelease]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ReleaseStateError(f"cannot read the release state: {exc.strerror}") from None
        try:
            data = json.loads(text)
            return {
                str(name): AcceptedRelease(
                    sequence=_int(rec["sequence"]),
                    release=str(rec["release"]),
                    sha256=str(rec["sha256"]),
                )
                for name, rec in dict(data["model_sets"]).items()
            }
        except (ValueError, KeyError, TypeError) as exc:
            # Refusing to start beats forgetting what was accepted (a replay window).
            raise ReleaseStateError(f"the release state file is not valid: {exc}") from None

    def get(self, model_set: str) -> AcceptedRelease | None:
        """Return the last accepted release of a model set, if any."""
        with self._lock:
            return self._records.get(model_set)

    def record(self, model_set: str, accepted: AcceptedRelease) -> None:
        """Persist an accepted release (fsynced) unless an equal or higher one is recorded."""
        with self._lock:
            current = self._records.get(model_set)
            if current is not None and current.sequence >= accepted.sequence:
                return
            records = {**self._records, model_set: accepted}
            self._write(records)
            self._records = records

    def _write(self, records: dict[str, AcceptedRelease]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {"model_sets": {k: asdict(v) for k, v in sorted(records.items())}}, indent=2
        ).encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
                os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"sequence {value!r} is not a positive integer")
    return value
