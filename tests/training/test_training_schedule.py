"""When training runs: the cadence, drift alerts (debounced) on the real broker, the skip switch."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from infra.bus import KafkaBus
from infra.contracts import DriftAlert, encode, utc_now
from infra.settings import get_settings
from tests.helpers import SettingsFactory, wait_until_async
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


def _logged(caplog: pytest.LogCaptureFixture, start: str) -> list[logging.LogRecord]:
    """Return the records the training loop logged whose message starts with `start`."""
    return [
        r
        for r in caplog.records
        if r.name == "training.schedule" and r.getMessage().startswith(start)
    ]


@pytest.mark.kafka
def test_a_burst_of_drift_alerts_starts_one_run_early(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="training.schedule")
    settings = make_settings(kafka=True)
    bus = KafkaBus(settings)
    debounce_s = 1.0
    runs: list[tuple[str, float]] = []  # trigger, wall-clock start

    def runner(trigger: str) -> None:
        runs.append((trigger, time.time()))

    def alert(value: float) -> bytes:
        return encode(
            DriftAlert(
                ts_event=utc_now(),
                symbol="ES",
                strategy="S2",
                metric="r_multiple",
                detector="ADWIN",
                value=value,
            )
        )

    def alerts_seen() -> list[logging.LogRecord]:
        return _logged(caplog, "drift alert")

    async def main() -> Any:
        stop = asyncio.Event()
        listening = asyncio.Event()
        loop_task = asyncio.create_task(
            train_loop(
                settings,
                runner,
                every_s=3600,  # the scheduled run happens at once, the next in an hour
                drift=True,
                debounce_s=debounce_s,
                min_gap_s=0.0,
                stop=stop,
                listening=listening,
            )
        )
        await asyncio.wait_for(listening.wait(), 30)
        async with bus.producer() as producer:
            for i in range(3):  # a burst: one run after a second of quiet
                await producer.send(bus.topic("drift"), alert(float(i)), key=b"ES")
            await wait_until_async(lambda: len(alerts_seen()) >= 3, 30, what="the burst")
            burst = alerts_seen()
            await wait_until_async(
                lambda: [r for r in runs if r[0] == "drift"], 30, what="the drift run"
            )
            # One more alert, well after the burst: its run comes after a second of quiet
            # following it, so a second run for the burst would show up before this one.
            sentinel_sent = time.time()
            await producer.send(bus.topic("drift"), alert(9.0), key=b"ES")
            await wait_until_async(lambda: len(alerts_seen()) >= 4, 30, what="the later alert")
            sentinel = alerts_seen()[3]
            await wait_until_async(
                lambda: [r for r in runs if r[1] >= sentinel.created], 30, what="its run"
            )
        stop.set()
        return burst, sentinel_sent, await asyncio.wait_for(loop_task, 30)

    burst, sentinel_sent, stats = asyncio.run(main())
    assert [t for t, at in runs if at < sentinel_sent] == ["schedule", "drift"]
    assert [t for t, _ in runs] == ["schedule", "drift", "drift"]
    assert len(burst) == 3  # the burst's three alerts, all seen before its one run
    assert runs[1][1] - burst[-1].created >= debounce_s  # a second of quiet after the last
    assert stats.alerts == 3 + 1 and stats.failed == 0


def test_skip_switch_turns_due_runs_into_logged_noops(
    make_settings: SettingsFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="training.schedule")
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
        await wait_until_async(
            lambda: len(_logged(caplog, "skip switch")) >= 3, 30, what="three skipped runs"
        )
        stop.set()
        return await task

    stats = asyncio.run(main())
    assert calls == [] and stats.skipped >= 2
    assert stats.skipped == len(_logged(caplog, "skip switch"))  # each one logged
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


def test_a_failing_run_does_not_stop_the_loop(make_settings: SettingsFactory) -> None:
    settings = make_settings(kafka=False, SKIP_TRAINING_FILE="")

    def runner(trigger: str) -> None:
        raise RuntimeError("boom")

    stats = asyncio.run(train_loop(settings, runner, every_s=0.05, drift=False, max_runs=3))
    assert stats.runs == ["schedule"] * 3 and stats.failed == 3
