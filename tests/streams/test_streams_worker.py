"""The streams worker end to end on the real broker and Redis: 10,000 malformed
records mixed into the topics become dead letters without disturbing anything, stream
features reach Feast online, every event lands in the lake once, metrics are served,
and a replay of the lake rebuilds the online store exactly."""

from __future__ import annotations

import random
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil

from features.store import TradeloopFeatureStore
from infra.contracts import STRATEGIES, Bar, DeadLetter, Event, FeatureUpdate, decode, encode
from infra.lake import read_topic
from infra.settings import Settings
from infra.stack import free_port
from tests.helpers import settings_env
from tests.kit.harness import (
    Raw,
    WorkerProcess,
    expected_online,
    lake_event_ids,
    online_values,
    produce,
    recompute,
    wait_for,
)
from tests.kit.synth import synthetic_events
from tests.streams.test_streams_guarantees import SINK_UP, lake_reads

ENTITIES = [(s, k) for s in ("ES", "NQ") for k in STRATEGIES]


def malformed(n: int) -> list[Raw]:
    """Records that must become dead letters: junk, wrong contract, wrong key, bad values."""
    bar = next(e for e in synthetic_events(5) if isinstance(e, Bar))
    bad_bar = encode(bar).replace(b'"high":', b'"high":-', 1)
    out: list[Raw] = []
    kinds = [
        ("bars", b"ES", b"not json at all"),
        ("signals", b"NQ", b"[1, 2, 3]"),
        ("outcomes", b"ES", encode(bar)),  # a bar on the outcomes topic
        ("bars", b"NQ", encode(bar)),  # an ES bar keyed NQ
        ("bars", b"ES", bad_bar),
        ("signals", b"ES", b'{"schema": {"name": "signal_snapshot", "version": 99}}'),
        ("outcomes", b"ES", b"\xff\xfe\x00garbage"),
        ("signals", b"NQ", None),  # a tombstone
    ]
    for i in range(n):
        topic, key, value = kinds[i % len(kinds)]
        out.append((topic, key, None if value is None else value + (b" " * (i % 3))))
    return out


def mixed(events: list[Event], bad: list[Raw], seed: int = 3) -> list[Event | Raw]:
    """Interleave bad records among the events (events keep their order)."""
    rng = random.Random(seed)
    out: list[Event | Raw] = list(events)
    for rec in bad:
        out.insert(rng.randrange(len(out) + 1), rec)
    return out


def test_worker_end_to_end_with_10000_malformed_and_replay_rebuilds_online_store(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(redis=True, FEAST_REPO_DIR=str(tmp_path / "repo"), TOPIC_PARTITIONS=2)
    events = list(synthetic_events(3000))
    bad = malformed(10_000)
    produce(settings, mixed(events, bad))
    port = free_port()
    worker = WorkerProcess(
        settings,
        tmp_path / "worker.log",
        args=[
            "--lake-batch-events",
            "500",
            "--lake-batch-seconds",
            "1",
            "--metrics-port",
            str(port),
        ],
        env=settings_env(settings),
    ).start()
    try:
        want_ids = {e.event_id for e in events}
        read = lake_reads(settings, lambda: SINK_UP in worker.log())
        wait_for(
            lambda: (ids := read()) is not None and set(ids) >= want_ids,
            150,
            0.5,
            "all events in the lake",
        )
        counts = lake_event_ids(settings)
        assert set(counts) == want_ids and max(counts.values()) == 1

        # every malformed record is a dead letter with its original bytes and origin
        dlq = wait_for(
            lambda: (t := read_topic(settings.lake, "dlq")).num_rows >= len(bad) and t,
            90,
            0.5,
            "dlq",
        )
        letters = [decode(p.encode(), DeadLetter) for p in dlq.column("payload").to_pylist()]
        assert len(letters) == len(bad)
        assert sorted(dl.payload() for dl in letters) == sorted(v or b"" for _, _, v in bad)
        assert all(
            dl.source_topic.startswith(settings.topic_prefix) and dl.reason for dl in letters
        )
        assert {dl.error_type for dl in letters} >= {"EventDecodeError", "KeyMismatchError"}

        # features: every update derived from the events, once, and online = recomputation
        state = recompute(events)
        want_updates = {
            o.event_id
            for o in recompute([]).learn_many(events)  # type: ignore[arg-type]
            if isinstance(o, FeatureUpdate)
        }
        wait_for(
            lambda: set(lake_event_ids(settings, ["features"])) >= want_updates, 60, 0.5, "features"
        )
        fs = TradeloopFeatureStore(settings)
        expected = expected_online(state, ENTITIES)
        wait_for(
            lambda: online_values(fs, ENTITIES) == expected, 60, 0.25, "online = recomputation"
        )

        metrics = (
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        )
        for name in (
            'tradeloop_stream_events_in_total{topic="bars"}',
            'tradeloop_stream_events_out_total{topic="features"}',
            'tradeloop_dead_letters_total{topic="outcomes"}',
            'tradeloop_lake_files_written_total{topic="signals"}',
            "tradeloop_feast_push_seconds_bucket",
        ):
            assert name in metrics, name
        dead = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("tradeloop_dead_letters_total{")
        )
        assert dead == len(bad)
        assert "heap settled: " in worker.log()  # the run above ran on the frozen heap
    finally:
        code = worker.stop()
    assert code == 0, worker.log()[-3000:]

    # replay the lake into a fresh online store (another Redis db): exactly the live values
    fresh = make_settings(
        redis=True,
        FEAST_REPO_DIR=str(tmp_path / "repo"),
        TOPIC_PREFIX=settings.topic_prefix,
        LAKE_URI=settings.lake,
        REDIS_URL=settings.redis_url.rsplit("/", 1)[0] + "/1",
    )
    replayed = subprocess.run(
        [
            str(Path(sys.executable).with_name("tradeloop")),
            "replay",
            "--into",
            "features",
            "--no-progress",
        ],
        env=settings_env(fresh),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "replayed 3000 events" in replayed.stdout
    assert (
        online_values(TradeloopFeatureStore(fresh), ENTITIES)
        == online_values(fs, ENTITIES)
        == expected
    )


def _sink_children(worker: WorkerProcess) -> list[psutil.Process]:
    """Return the worker's live lake sink children (a killed one may be a zombie for a moment)."""
    assert worker.proc is not None
    out = []
    for child in psutil.Process(worker.proc.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "streams.sink_process" in " ".join(
                child.cmdline()
            ):
                out.append(child)
        except psutil.Error:  # it exited while we looked
            continue
    return out


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def test_lake_sink_child_is_restarted_and_dies_with_the_worker(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(TOPIC_PARTITIONS=1)
    worker = WorkerProcess(
        settings,
        tmp_path / "worker.log",
        args=["--no-feast", "--metrics-port", "0", "--lake-batch-seconds", "0.5"],
        env=settings_env(settings),
    ).start()
    try:
        first = wait_for(lambda: _sink_children(worker), 90, 0.3, "sink child")[0]
        first.kill()  # the child dies on its own: the worker starts another
        second = wait_for(
            lambda: [p for p in _sink_children(worker) if p.pid != first.pid], 30, 0.3, "restart"
        )[0]
        wait_for(
            lambda: "lake sink assigned" in worker.log().split("restarting")[-1],
            60,
            0.3,
            "reassigned",
        )
        events = list(synthetic_events(200))
        produce(settings, events)
        wait_for(
            lambda: set(lake_event_ids(settings)) >= {e.event_id for e in events},
            60,
            0.5,
            "events landed by the restarted sink",
        )
        assert "the lake sink process exited" in worker.log()
        worker.kill()  # SIGKILL: the child must not outlive the worker
        wait_for(lambda: _gone(second), 10, 0.1, "child gone")
    finally:
        worker.stop()
