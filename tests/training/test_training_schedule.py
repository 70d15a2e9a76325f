"""When training runs: the cadence, drift alerts (debounced) on the real broker, the skip switch."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from infra.bus import KafkaBus
from infra.contracts import DriftAlert, encode, utc_now
from infra.settings import get_settings
from training.schedule import parse_duration, skip_switch, train_loop


def test_parse_duration() -> None:
    assert parse_duration("30m") == 1800
    assert parse_duration("90s") == 90
    assert parse_duration("2h") == 7200
    assert parse_duration("1d") == 86400
    assert parse_duration("45") == 45
    for bad in ("", "0m", "soon", "-5m", "5 weeks"):
        with pytest.raises(ValueError):
            parse_duration(bad)


@pytest.mark.kafka
def test_a_burst_of_drift_alerts_starts_one_run_early(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(kafka=True)
    bus = KafkaBus(settings)
    runs: list[str] = []
    drift_run = threading.Event()

    def runner(trigger: str) -> None:
        runs.append(trigger)
        if trigger == "drift":
            drift_run.set()

    async def main() -> Any:
        stop = asyncio.Event()
        listening = asyncio.Event()
        loop_task = asyncio.create_task(
            train_loop(
                settings,
                runner,
                every_s=3600,  # the scheduled run happens at once, the next in an hour
                drift=True,
                debounce_s=1.0,
                min_gap_s=0.0,
                stop=stop,
                listening=listening,
            )
        )
        await asyncio.wait_for(listening.wait(), 30)
        async with bus.producer() as producer:
            for i in range(3):  # a burst: one run after a second of quiet
                alert = DriftAlert(
                    ts_event=utc_now(),
                    symbol="ES",
                    strategy="S2",
                    metric="r_multiple",
                    detector="ADWIN",
                    value=float(i),
                )
                await producer.send(bus.topic("drift"), encode(alert), key=b"ES")
                await asyncio.sleep(0.2)
        for _ in range(300):
            if drift_run.is_set():
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # no second drift run may follow the burst
        stop.set()
        return await asyncio.wait_for(loop_task, 30)

    stats = asyncio.run(main())
    assert runs == ["schedule", "drift"]
    assert stats.alerts == 3 and stats.failed == 0


def test_skip_switch_turns_due_runs_into_logged_noops(
    make_settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    skip = tmp_path / "SKIP_TRAINING"
    settings = make_settings(kafka=False, SKIP_TRAINING_FILE=str(skip))
    assert skip_switch(settings) is None
    skip.write_text("maintenance\n")
    assert skip_switch(settings) == skip
    calls: list[str] = []

    async def main() -> Any:
        stop = asyncio.Event()
        task = asyncio.create_task(
            train_loop(settings, calls.append, every_s=0.1, drift=False, stop=stop)
        )
        await asyncio.sleep(1.0)  # ten due runs at a 0.1 s cadence
        stop.set()
        return await task

    stats = asyncio.run(main())
    assert calls == [] and stats.skipped >= 2
    # the CLI honours the same switch (the workflow checks the file too)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKIP_TRAINING_FILE", "SKIP_TRAINING")
    get_settings.cache_clear()
    try:
        from training.cli import train

        out = CliRunner().invoke(train, ["--once", "--no-progress"])
        assert out.exit_code == 0 and "training skipped" in out.output
        out = CliRunner().invoke(train, ["--once", "--every", "30m"])
        assert out.exit_code != 0
    finally:
        get_settings.cache_clear()


def test_a_failing_run_does_not_stop_the_loop(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(kafka=False, SKIP_TRAINING_FILE="")

    def runner(trigger: str) -> None:
        raise RuntimeError("boom")

    stats = asyncio.run(train_loop(settings, runner, every_s=0.05, drift=False, max_runs=3))
    assert stats.runs == ["schedule"] * 3 and stats.failed == 3
