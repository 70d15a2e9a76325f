"""Feast's file registry under workers that start together.

`TradeloopFeatureStore.apply` runs at every worker start. Feast rewrites its file
registry in place, so a process reading it mid-write failed with "Wire format was
corrupt" (two streams workers started at once). Applies on one host take turns
under a lock file beside the registry.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from features.store import TradeloopFeatureStore
from tests.helpers import SettingsFactory, settings_env, wait_until

APPLY = (
    "from features.store import TradeloopFeatureStore\n"
    "from infra.settings import Settings\n"
    "TradeloopFeatureStore(Settings()).apply(force=False)\n"
)


def _blocked_on_flock(pid: int) -> bool:
    """Say whether `pid` waits for a flock (a `->` line of /proc/locks)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and "FLOCK" in fields and str(pid) in fields:
            return True
    return False


def test_an_apply_waits_for_another_process_applying(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    state = TradeloopFeatureStore(settings).state_dir
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "apply.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # this process is applying
        proc = subprocess.Popen(
            [sys.executable, "-c", APPLY],
            env=settings_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: proc.poll() is not None or _blocked_on_flock(proc.pid),
                120,
                what="the apply to wait for the lock",
            )
            assert proc.poll() is None, "the apply ran while another process was applying"
            assert not (state / "registry.db").exists()
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
    assert (state / "registry.db").exists()
    assert os.stat(state / "apply.lock").st_size == 0
