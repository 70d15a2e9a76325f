"""A trader killed between verifying a release and swapping to it, then started again.

A signed release is on the `models` topic; `tradeloop trade` runs as a real process
with the crash point `hotswap.after_verify_before_swap` set and dies after verifying it,
before the anti-replay ledger records it and before it serves. The next trader on the
same state verifies the same release again (it is not taken for a replay), serves it,
and records it in the ledger.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.crash import CRASH_ENV, CRASH_EXIT_CODE
from infra.settings import Settings, settings_env
from infra.stack import free_port
from tests.helpers import s3_bucket_for, unique, wait_until
from tests.hotswap_support import Publisher, release_bytes

pytestmark = [pytest.mark.kafka, pytest.mark.s3]

TRADELOOP = str(Path(sys.executable).with_name("tradeloop"))


def _health(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return dict(json.loads(r.read()))
    except OSError:
        return None


def _trade(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [TRADELOOP, "trade", "--feed", "sim", "--symbols", "ES", "--speed", "600",
           "--http-port", str(port), "--run-id", log.stem, "--drain-timeout", "10"]  # fmt: skip
    return subprocess.Popen(
        cmd, env=env, cwd=log.parent, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def test_killed_between_verify_and_swap_the_next_trader_serves_the_release(
    make_settings: Callable[..., Settings], s3_server: Any, tmp_path: Path
) -> None:
    bucket = s3_bucket_for(s3_server.address, unique("hc"))
    ledger = tmp_path / "release-state.json"
    settings = make_settings(kafka=True, s3=True, S3_BUCKET=bucket, RELEASE_STATE_PATH=str(ledger))
    Publisher(settings).publish(release_bytes(settings, 1))
    env = {**settings_env(settings), "TRADELOOP_HOME": str(tmp_path / "home")}
    env.pop(CRASH_ENV, None)

    log1 = tmp_path / "run1.log"
    first = _trade({**env, CRASH_ENV: "hotswap.after_verify_before_swap:1"}, free_port(), log1)
    assert first.wait(120) == CRASH_EXIT_CODE, log1.read_text()[-3000:]
    assert "crash point hotswap.after_verify_before_swap: dying" in log1.read_text()
    assert not ledger.exists() or "r1" not in ledger.read_text()  # never recorded, never served

    port = free_port()
    log2 = tmp_path / "run2.log"
    second = _trade(env, port, log2)
    try:

        def serving() -> dict[str, Any] | None:
            assert second.poll() is None, log2.read_text()[-3000:]
            h = _health(port)
            return h if h and h["models"]["release"] == "r1" else None

        h = wait_until(serving, 120, interval_s=0.2, what="the release served after the crash")
        assert h is not None
        assert h["rejections"] == {} and h["last_rejected_release"] is None
        assert h["models"]["hot_swap"]["sequence"] == 1
        assert "r1" in ledger.read_text()  # recorded before it served
        second.send_signal(signal.SIGTERM)
        assert second.wait(120) == 0, log2.read_text()[-3000:]
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(30)
