"""The outbox under faults at the write: a crash mid-append, a disk that fills and empties.

Each case runs a real process with a crash plan (`TRADELOOP_CRASH_AT`) appending to a
spool, then reopens the spool in this process and reads it back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.crash import CRASH_ENV, CRASH_EXIT_CODE
from trader.io.outbox import Outbox, OutboxError, fsync_policy

WRITER = """
import json, sys
from trader.io.outbox import Outbox, OutboxError, fsync_policy
calls = []
ob = Outbox(sys.argv[1], fsync="always", on_write_error=lambda why: calls.append("error " + why),
            on_write_ok=lambda: calls.append("ok"))
seqs = []
for i in range(10):
    seqs.append(ob.append("signals", b"ES", f"v{i}".encode()))
    calls.append(f"held {ob.held}")
ob.close()
print(json.dumps({"seqs": seqs, "calls": calls, "failures": ob.write_failures}))
"""


def _write(spool: Path, plan: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, CRASH_ENV: plan}
    return subprocess.run(
        [sys.executable, "-c", WRITER, str(spool)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _values(spool: Path) -> list[bytes]:
    ob = Outbox(spool)
    try:
        return [value for _, _, _, value in ob.read(100)]
    finally:
        ob.close()


def test_a_crash_mid_append_leaves_a_torn_frame_that_the_next_open_cuts(tmp_path: Path) -> None:
    run = _write(tmp_path, "outbox.mid_append:4")
    assert run.returncode == CRASH_EXIT_CODE, run.stderr
    (segment,) = tmp_path.glob("seg-*.log")
    torn = segment.stat().st_size
    assert _values(tmp_path) == [b"v0", b"v1", b"v2"]  # the half-written fourth is cut off
    assert segment.stat().st_size < torn
    ob = Outbox(tmp_path)
    assert ob.append("signals", b"ES", b"after") == 3  # the next record takes its place
    ob.close()
    assert _values(tmp_path) == [b"v0", b"v1", b"v2", b"after"]


def test_a_full_disk_holds_records_in_order_and_writes_them_when_it_has_room(
    tmp_path: Path,
) -> None:
    # passes 4, 5 and 6 of the append fail with ENOSPC; then the disk has room again
    run = _write(tmp_path, "outbox.mid_append:4:enospc:3")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["seqs"] == [0, 1, 2, None, None, None, 6, 7, 8, 9]
    assert out["calls"] == [
        "held 0", "held 0", "held 0",
        "error ENOSPC: No space left on device (crash point outbox.mid_append)", "held 1",
        "held 2", "held 3",
        "ok", "held 0", "held 0", "held 0", "held 0",
    ]  # fmt: skip
    assert out["failures"] == 3
    assert _values(tmp_path) == [f"v{i}".encode() for i in range(10)]  # none lost, in order


def test_a_disk_still_full_at_close_keeps_everything_written_before_it(tmp_path: Path) -> None:
    run = _write(tmp_path, "outbox.mid_append:6:enospc")
    assert run.returncode == 0, run.stderr
    assert "5 records held in memory could not be written" in run.stderr
    assert _values(tmp_path) == [f"v{i}".encode() for i in range(5)]


def test_the_fsync_policy_is_always_on_live_venues_unless_set(tmp_path: Path) -> None:
    assert fsync_policy("", "paper") == "interval"
    assert fsync_policy("", "ib") == "always" and fsync_policy("", "projectx") == "always"
    assert (
        fsync_policy("interval", "ib") == "interval" and fsync_policy("always", "paper") == "always"
    )
    with pytest.raises(OutboxError, match="fsync policy 'sometimes'"):
        Outbox(tmp_path, fsync="sometimes")
