"""The demo against a venue simulator: `tradeloop demo --venue ib|projectx|rithmic`.

The simulator runs as a child process (`tradeloop venues sim NAME`), plays the sim
market's regular-hours bars at the demo's pace once the trader subscribes, and fills
the trader's orders; the settings it prints reach the trader's environment. They
hold the simulator's throwaway credentials, so they go to a 0600 file, not the log.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

__all__ = ["VenueSimError", "bar_ms_for", "start_simulator"]

#: Days of bars the simulator can play; the demo stops the trader long before.
SIM_DAYS = 30


class VenueSimError(RuntimeError):
    """Raise when the venue simulator does not start; the message says why."""


def bar_ms_for(speed: float) -> int:
    """Return the milliseconds between one-minute bars at `speed` x wall clock."""
    return max(5, round(60_000 / speed))


def start_simulator(
    exe: str, name: str, *, env: dict[str, str], logs: Path, bar_ms: int, timeout_s: float = 60.0
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """Start `tradeloop venues sim NAME` and return it with the settings it printed."""
    values_path = logs / f"venue-sim-{name}.env"
    values_path.unlink(missing_ok=True)
    out_fd = os.open(values_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    log_path = logs / f"venue-sim-{name}.log"
    args = [exe, "venues", "sim", name, "--port", "0", "--bar-ms", str(bar_ms)]
    args += ["--days", str(SIM_DAYS)]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            args,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=out_fd,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    os.close(out_fd)
    deadline = time.monotonic() + timeout_s
    while b"listening" not in log_path.read_bytes():
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise VenueSimError(f"the {name} simulator exited ({proc.returncode}): {tail}")
        if time.monotonic() > deadline:
            proc.kill()
            raise VenueSimError(f"the {name} simulator did not start within {timeout_s:.0f}s")
        time.sleep(0.1)
    values: dict[str, str] = {}
    for line in values_path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isupper():
            values[key] = value
    if not values:
        proc.kill()
        raise VenueSimError(f"the {name} simulator printed no settings")
    return proc, values
