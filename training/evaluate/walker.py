"""The client of the trader's walk (`python -m trader.walk`): one subprocess, JSON lines.

Training never imports the trader; it drives the trader's engines through this
subprocess, as `tradeloop backtest` is driven for vendor and synthetic sources.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infra.settings import Settings, settings_env
from training.config import TrainingError

__all__ = ["WalkError", "WalkProcess"]


class WalkError(TrainingError):
    """Raise when the walk subprocess refuses a command or dies."""


class WalkProcess:
    """A running walk: send a command, read its one-line reply."""

    def __init__(self, settings: Settings, args: Sequence[str], log_path: Path) -> None:
        env = settings_env(settings)
        env["ALLOW_HMAC_RELEASES"] = "1"  # the evaluation's own releases are HMAC-signed
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trader.walk", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            text=True,
            bufsize=1,
        )
        self.log_path = log_path
        self.hello = self._reply("start")

    def _reply(self, what: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise WalkError(f"the walk ended during {what} (exit {code}): {' | '.join(tail)}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise WalkError(f"the walk refused {what}: {reply.get('error')}")
        return reply

    def send(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one command and return its reply; raise `WalkError` on a refusal."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the reply read below reports how the walk ended
        return self._reply(op)

    def run(self, until_s: int | None) -> dict[str, Any]:
        """Process the bars before `until_s` (None: all)."""
        return self.send("run", until_s=until_s)

    def swap(self, arms: Sequence[str], manifest_key: str) -> dict[str, Any]:
        """Serve the release at `manifest_key` in `arms` from the next bar."""
        return self.send("swap", arms=list(arms), manifest_key=manifest_key)

    def finish(self) -> dict[str, Any]:
        """Close all positions at the last bar and end the walk."""
        reply = self.send("finish")
        self.close()
        return reply

    def close(self) -> None:
        """End the subprocess (closing stdin ends it; kill it if it does not go)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
