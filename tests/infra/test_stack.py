"""`tradeloop stack` starts the broker and S3, and stops only what it started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from infra.stack import StackError, start_tansu


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRADELOOP_HOME": str(home)}
    return subprocess.run(
        [str(Path(sys.executable).parent / "tradeloop"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_stack_up_status_down_leaves_no_process(tmp_path: Path) -> None:
    bystander = start_tansu(log_dir=tmp_path)  # a broker the stack did not start
    try:
        up = _cli(tmp_path, "stack", "up", "--s3")
        assert up.returncode == 0, up.stderr
        state = json.loads((tmp_path / "stack.json").read_text())
        pids = [state["kafka"]["process"]["pid"], state["s3"]["process"]["pid"]]
        assert all(psutil.pid_exists(p) for p in pids)

        again = _cli(tmp_path, "stack", "up", "--s3")  # idempotent: reuses what runs
        assert (
            json.loads((tmp_path / "stack.json").read_text())["kafka"]["process"]["pid"] == pids[0]
        )
        assert again.returncode == 0

        status = _cli(tmp_path, "stack", "status", "--json")
        info = json.loads(status.stdout)
        assert info["kafka"]["running"] and info["s3"]["running"]

        down = _cli(tmp_path, "stack", "down")
        assert down.returncode == 0 and "kafka" in down.stdout
        for pid in pids:
            assert (
                not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            )
        assert not (tmp_path / "stack.json").exists()
        assert bystander.alive()
        assert "not started" in _cli(tmp_path, "stack", "status").stdout
    finally:
        bystander.stop()


def test_commands_find_the_stack_through_the_state_file(tmp_path: Path) -> None:
    up = _cli(tmp_path, "stack", "up")
    try:
        assert up.returncode == 0, up.stderr
        bootstrap = json.loads((tmp_path / "stack.json").read_text())["kafka"]["bootstrap"]
        config = json.loads(_cli(tmp_path, "config", "--json").stdout)
        assert config["bootstrap_servers (effective)"] == bootstrap
        assert config["store (effective)"].endswith("store")  # no S3: a local directory
    finally:
        _cli(tmp_path, "stack", "down")


def test_config_masks_secrets(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TRADELOOP_HOME": str(tmp_path),
        "MANIFEST_HMAC_KEY": "very-secret-value-123",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-xyz",
    }
    out = subprocess.run(
        [str(Path(sys.executable).parent / "tradeloop"), "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    assert "very-secret" not in out.stdout and "aws-secret" not in out.stdout
    assert "********" in out.stdout


def test_stack_up_durable_keeps_the_records_across_a_broker_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from infra.bus import KafkaBus, TopicSetting
    from infra.settings import Settings
    from infra.stack import ManagedProcess, free_port, stack_down, stack_up

    monkeypatch.setenv("TRADELOOP_HOME", str(tmp_path))
    port = free_port()
    up = _cli(tmp_path, "stack", "up", "--durable", "--kafka-port", str(port))
    try:
        assert up.returncode == 0, up.stderr
        assert "storage=s3://" in up.stdout
        state = json.loads((tmp_path / "stack.json").read_text())
        assert state["kafka"]["storage"].startswith("s3://") and "s3" in state
        bus = KafkaBus(Settings(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}", TOPIC_PREFIX="d."))
        topic = bus.topic("kept")
        values = [str(i).encode() for i in range(50)]

        async def produce() -> None:
            await bus.ensure_topics([TopicSetting(topic, 1, {})])
            async with bus.producer() as producer:
                await producer.send_many(topic, [(None, v) for v in values])

        asyncio.run(produce())
        assert stack_up()["kafka"]["process"]["pid"] == state["kafka"]["process"]["pid"]
        ManagedProcess(**state["kafka"]["process"]).kill()  # returns once it is gone
        restarted = stack_up(durable=True, kafka_port=port)  # same storage, same port
        assert restarted["kafka"]["process"]["pid"] != state["kafka"]["process"]["pid"]
        assert restarted["s3"]["process"]["pid"] == state["s3"]["process"]["pid"]
        assert asyncio.run(bus.count_records([topic])) == {topic: len(values)}
    finally:
        stack_down()


def test_stack_up_durable_refuses_to_replace_a_running_memory_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infra.stack import stack_down, stack_up

    monkeypatch.setenv("TRADELOOP_HOME", str(tmp_path))
    stack_up()
    try:
        with pytest.raises(StackError, match="memory broker already runs"):
            stack_up(durable=True)
        assert set(json.loads((tmp_path / "stack.json").read_text())) == {"kafka"}
    finally:
        stack_down()
