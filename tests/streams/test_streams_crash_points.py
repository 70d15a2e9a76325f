"""The worker's named crash points: each fires once, the worker (or its lake sink child)
dies there and starts again, and nothing is lost or doubled downstream.

One plan names the four points of the worker's processes; `TRADELOOP_CRASH_FIRED` makes
each fire once across restarts. A sink point kills the lake sink child (the worker
starts a new one); an agents point kills the worker (the test starts it again with the
same plan, which goes on to the next point). Events keep arriving while it runs. At the
end every event is in the lake exactly once (by event_id) and the online store equals a
recomputation from scratch.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from features.store import TradeloopFeatureStore
from infra.crash import CRASH_ENV, CRASH_EXIT_CODE, CRASH_FIRED_ENV, CrashPoint
from tests.helpers import SettingsFactory, settings_env
from tests.kit.harness import (
    WorkerProcess,
    produce,
    wait_for,
)
from tests.kit.synth import synthetic_events
from tests.streams.test_streams_guarantees import (
    FAST,
    assert_exactly_once,
    wait_landed,
    wait_online,
)

WORKER_POINTS = {
    CrashPoint.AGENTS_AFTER_CHANGELOG_BEFORE_COMMIT: 6,
    CrashPoint.AGENTS_MID_FEAST_PUSH: 3,
    CrashPoint.SINK_AFTER_MARKER_BEFORE_UPLOAD: 1,
    CrashPoint.SINK_AFTER_UPLOAD_BEFORE_COMMIT: 2,
}


@pytest.mark.slow
@pytest.mark.timeout(600)  # three worker starts, each with its lake sink child
def test_each_worker_crash_point_fires_once_and_nothing_is_lost_or_doubled(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(
        kafka=True,
        s3=True,
        redis=True,
        STORE_DIR=str(tmp_path / "store"),
        FEAST_REPO_DIR=str(tmp_path / "repo"),
        TOPIC_PARTITIONS=2,
    )
    TradeloopFeatureStore(settings).apply()
    pool = list(synthetic_events(12000))  # enough to keep events coming until every point fired
    chunks = [pool[i : i + 100] for i in range(0, len(pool), 100)]
    fired = tmp_path / "fired"
    plan = ",".join(f"{point.value}:{n}" for point, n in WORKER_POINTS.items())
    env = {**settings_env(settings), CRASH_ENV: plan, CRASH_FIRED_ENV: str(fired)}
    events = chunks.pop(0)
    produce(settings, events)

    def fired_points() -> set[str]:
        return set(fired.read_text().split()) if fired.exists() else set()

    deaths = 0
    produced_at = [time.monotonic()]
    for run in range(4):
        worker = WorkerProcess(settings, tmp_path / f"worker-{run}.log", args=FAST, env=env)
        worker.start()

        def dead_or_done(w: WorkerProcess = worker) -> str | None:
            if not w.alive:
                return "exited"
            if fired_points() == {p.value for p in WORKER_POINTS}:
                return "all fired"
            if chunks and time.monotonic() - produced_at[0] > 2.0:  # more arrives while it works
                events.extend(chunks[0])
                produce(settings, chunks.pop(0))
                produced_at[0] = time.monotonic()
            return None

        try:
            outcome = wait_for(dead_or_done, 180, 0.5, f"a crash in run {run}")
        except TimeoutError:
            worker.kill()
            raise AssertionError(f"fired {fired_points()}; log:\n{worker.log()[-3000:]}") from None
        if outcome == "all fired":
            break
        assert worker.proc is not None and worker.proc.returncode == CRASH_EXIT_CODE, worker.log()
        deaths += 1
    try:
        wait_landed(settings, events, 120)
        wait_online(settings, events, 90)
        assert worker.alive
    finally:
        worker.stop()
    assert fired_points() == {p.value for p in WORKER_POINTS}
    assert deaths == 2  # the two agents points killed the worker; the sink's killed its child
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("worker-*.log"))
    assert logs.count("the lake sink process exited with 86") == 2
    assert_exactly_once(settings, events)
