"""Named crash points: the plan's grammar, die at the N-th pass, ENOSPC for a while, no-op unset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.crash import (
    CRASH_ENV,
    CRASH_EXIT_CODE,
    CRASH_FIRED_ENV,
    CrashPlanError,
    CrashPoint,
    parse_plan,
)

PROBE = """
from infra.crash import CrashPoint, crash_point
for i in range(1, 7):
    try:
        crash_point(CrashPoint.OUTBOX_MID_APPEND)
        crash_point(CrashPoint.SINK_AFTER_UPLOAD_BEFORE_COMMIT)
        print(i, "passed", flush=True)
    except OSError as exc:
        print(i, "errno", exc.errno, flush=True)
"""


def _probe(plan: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if plan is not None:
        env[CRASH_ENV] = plan
    return subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_plan_names_points_passes_and_modes() -> None:
    plan = parse_plan(
        "sink.after_upload_before_commit:3, outbox.mid_append:2:enospc,"
        "agents.mid_feast_push:1:enospc:4"
    )
    assert plan == {
        CrashPoint.SINK_AFTER_UPLOAD_BEFORE_COMMIT: (3, "die", 0),
        CrashPoint.OUTBOX_MID_APPEND: (2, "enospc", 0),
        CrashPoint.AGENTS_MID_FEAST_PUSH: (1, "enospc", 4),
    }
    assert parse_plan("") == {}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("sink.after_upload:1", "unknown crash point 'sink.after_upload'"),
        ("outbox.mid_append", "needs a pass number"),
        ("outbox.mid_append:0", "needs a pass number"),
        ("outbox.mid_append:1:melt", "mode 'melt'"),
        ("outbox.mid_append:1:die:2", "only enospc takes a pass count"),
    ],
)
def test_a_bad_plan_is_a_typed_error_naming_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(CrashPlanError, match=CRASH_ENV) as info:
        parse_plan(text)
    assert says in str(info.value)


def test_die_exits_at_the_nth_pass_with_the_crash_code() -> None:
    run = _probe("sink.after_upload_before_commit:3")
    assert run.returncode == CRASH_EXIT_CODE
    assert run.stdout.split("\n")[:-1] == ["1 passed", "2 passed"]
    assert "crash point sink.after_upload_before_commit: dying at pass 3" in run.stderr


def test_enospc_fails_k_passes_then_lets_writes_through() -> None:
    run = _probe("outbox.mid_append:2:enospc:3")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:-1] == [
        "1 passed", "2 errno 28", "3 errno 28", "4 errno 28", "5 passed", "6 passed"
    ]  # fmt: skip


def test_unset_or_another_point_is_a_no_op_and_a_bad_plan_stops_the_start() -> None:
    for plan in (None, "hotswap.after_verify_before_swap:1"):
        run = _probe(plan)
        assert run.returncode == 0 and run.stdout.count("passed") == 6, run.stderr
    bad = _probe("nowhere:1")
    assert bad.returncode == 1 and "CrashPlanError" in bad.stderr and "nowhere" in bad.stderr


def test_with_a_fired_file_each_point_fires_once_across_restarts(tmp_path: Path) -> None:
    fired = tmp_path / "fired"
    plan = "outbox.mid_append:2,sink.after_upload_before_commit:3"
    codes = []
    for _ in range(3):
        env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
        env.update({CRASH_ENV: plan, CRASH_FIRED_ENV: str(fired)})
        run = subprocess.run(
            [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
        )
        codes.append(run.returncode)
    assert codes == [CRASH_EXIT_CODE, CRASH_EXIT_CODE, 0]
    assert fired.read_text().split() == ["outbox.mid_append", "sink.after_upload_before_commit"]
