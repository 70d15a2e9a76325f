"""Named crash points: fault injection by name, a no-op unless `TRADELOOP_CRASH_AT` is set.

`TRADELOOP_CRASH_AT=NAME:N[:MODE[:K]][,NAME2:M...]` is read once, at import: the N-th
time the process passes `crash_point(NAME)` it fails there. Modes:

- `die` (default): `os._exit(CRASH_EXIT_CODE)` at once: no finally, no flush, no atexit,
  what a kill -9 leaves;
- `enospc`: raise `OSError(ENOSPC)` at that pass and at the K-1 passes after it (a disk
  that fills, then has room again), or at every later pass without K (a full disk).

With `TRADELOOP_CRASH_FIRED=FILE` a point that dies writes its name to FILE, and a
process that starts with that file drops the points named in it: each point fires once
across the restarts of a process and its children (a worker restarted with the same
plan goes on to the next point). Unset, `crash_point` costs one global bool check.
"""

from __future__ import annotations

import errno
import os
import sys
from enum import StrEnum

__all__ = [
    "CRASH_ENV",
    "CRASH_EXIT_CODE",
    "CRASH_FIRED_ENV",
    "CrashPlanError",
    "CrashPoint",
    "armed",
    "crash_point",
    "parse_plan",
]

#: The environment variable holding the crash plan.
CRASH_ENV = "TRADELOOP_CRASH_AT"
#: The environment variable naming the file of the points that already fired.
CRASH_FIRED_ENV = "TRADELOOP_CRASH_FIRED"
#: The exit code of a process that died at a crash point (distinct from any other exit).
CRASH_EXIT_CODE = 86


class CrashPoint(StrEnum):
    """Every place a process can be made to fail on purpose."""

    SINK_AFTER_MARKER_BEFORE_UPLOAD = "sink.after_marker_before_upload"
    SINK_AFTER_UPLOAD_BEFORE_COMMIT = "sink.after_upload_before_commit"
    AGENTS_AFTER_CHANGELOG_BEFORE_COMMIT = "agents.after_changelog_before_commit"
    AGENTS_MID_FEAST_PUSH = "agents.mid_feast_push"
    OUTBOX_AFTER_ACK_BEFORE_CURSOR = "outbox.after_ack_before_cursor"
    OUTBOX_MID_APPEND = "outbox.mid_append"
    TRADER_ORDER_SPOOLED_BEFORE_JOURNAL = "trader.order_spooled_before_journal"
    HOTSWAP_AFTER_VERIFY_BEFORE_SWAP = "hotswap.after_verify_before_swap"
    TRAINING_AFTER_UPLOAD_BEFORE_MANIFEST = "training.after_upload_before_manifest"


MODES = ("die", "enospc")


class CrashPlanError(ValueError):
    """Raise when `TRADELOOP_CRASH_AT` names an unknown point or mode, or a bad count."""


def parse_plan(text: str) -> dict[CrashPoint, tuple[int, str, int]]:
    """Return {point: (pass number, mode, passes failed or 0 = all)} or raise `CrashPlanError`."""
    plan: dict[CrashPoint, tuple[int, str, int]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, rest = item.partition(":")
        count_text, _, rest = rest.partition(":")
        mode, _, times_text = rest.partition(":")
        try:
            point = CrashPoint(name)
        except ValueError:
            known = ", ".join(p.value for p in CrashPoint)
            raise CrashPlanError(
                f"{CRASH_ENV}: unknown crash point {name!r} (known: {known})"
            ) from None
        if not count_text.isdigit() or int(count_text) < 1:
            raise CrashPlanError(f"{CRASH_ENV}: {item!r} needs a pass number >= 1 after ':'")
        mode = mode or "die"
        if mode not in MODES:
            raise CrashPlanError(f"{CRASH_ENV}: {item!r} has mode {mode!r}, not one of {MODES}")
        if times_text and (not times_text.isdigit() or int(times_text) < 1 or mode == "die"):
            raise CrashPlanError(f"{CRASH_ENV}: {item!r}: only enospc takes a pass count >= 1")
        plan[point] = (int(count_text), mode, int(times_text or 0))
    return plan


def _fired(path: str) -> set[str]:
    try:
        with open(path) as fh:
            return {line.strip() for line in fh}
    except FileNotFoundError:
        return set()


_FIRED_PATH = os.environ.get(CRASH_FIRED_ENV, "")
_PLAN = {
    point: planned
    for point, planned in parse_plan(os.environ.get(CRASH_ENV, "")).items()
    if not _FIRED_PATH or point.value not in _fired(_FIRED_PATH)
}
_ARMED = bool(_PLAN)
_passes: dict[CrashPoint, int] = {}


def crash_point(name: CrashPoint) -> None:
    """Fail here if the crash plan says so (a no-op when `TRADELOOP_CRASH_AT` is unset)."""
    if _ARMED:
        _pass(name)


def _pass(name: CrashPoint) -> None:
    planned = _PLAN.get(name)
    if planned is None:
        return
    n = _passes[name] = _passes.get(name, 0) + 1
    at, mode, times = planned
    if n < at or (times and n >= at + times):
        return
    if mode == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device (crash point {name.value})")
    if _FIRED_PATH:
        with open(_FIRED_PATH, "a") as fh:
            fh.write(name.value + "\n")
    sys.stderr.write(f"crash point {name.value}: dying at pass {n}\n")
    sys.stderr.flush()
    os._exit(CRASH_EXIT_CODE)


def armed() -> bool:
    """Say whether a crash plan is set (to prepare a torn write only then)."""
    return _ARMED
