"""The worker's guarantees against the real broker, moto S3 and Redis, with workers as
subprocesses: kill -9 three times, S3 unreachable for a while, two workers sharing a
consumer group. (10,000 malformed records: tests/test_streams_worker.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from features.store import TradeloopFeatureStore
from infra.contracts import STRATEGIES, Event
from infra.settings import Settings
from infra.stack import ManagedProcess, free_port
from tests.helpers import TEST_BUCKET, SettingsFactory, settings_env, unique
from tests.kit.harness import (
    WorkerProcess,
    expected_online,
    lake_event_ids,
    online_values,
    produce,
    recompute,
    wait_for,
)
from tests.kit.synth import synthetic_events

ENTITIES = [(s, k) for s in ("ES", "NQ") for k in STRATEGIES]
FAST = ["--lake-batch-events", "300", "--lake-batch-seconds", "0.5", "--metrics-port", "0"]


def assert_exactly_once(settings: Settings, events: list[Event]) -> None:
    counts = lake_event_ids(settings)
    want = {e.event_id for e in events}
    assert set(counts) == want, (
        f"missing {len(want - set(counts))}, extra {len(set(counts) - want)}"
    )
    dupes = {k: v for k, v in counts.items() if v > 1}
    assert not dupes, f"{len(dupes)} events landed more than once"


#: What a worker's log says once its lake sink child consumes (and can land events).
SINK_UP = "lake sink assigned"


def lake_reads(
    settings: Settings, sink_up: Callable[[], bool] | None = None
) -> Callable[[], Counter[str] | None]:
    """Return a reader of `lake_event_ids` for waits while a worker starts.

    The first call reads the lake. With `sink_up`, later calls read it again only once
    `sink_up()` holds and return None before: until the starting worker's lake sink runs
    nothing writes the lake (a killed worker's sink died with it), so it cannot have
    changed, and a read of the whole lake from moto takes CPU that the starting worker
    (seconds of imports) needs on a two-core machine.
    """
    first = True

    def read() -> Counter[str] | None:
        nonlocal first
        if not first and sink_up is not None and not sink_up():
            return None
        first = False
        return lake_event_ids(settings)

    return read


def wait_landed(
    settings: Settings,
    events: list[Event],
    timeout_s: float,
    sink_up: Callable[[], bool] | None = None,
) -> None:
    """Wait until every event is in the lake (`sink_up`: see `lake_reads`)."""
    want = {e.event_id for e in events}
    read = lake_reads(settings, sink_up)
    wait_for(
        lambda: (ids := read()) is not None and set(ids) >= want,
        timeout_s,
        0.5,
        "every event in the lake",
    )


def wait_online(settings: Settings, events: list[Event], timeout_s: float) -> None:
    fs = TradeloopFeatureStore(settings)
    expected = expected_online(recompute(events), ENTITIES)
    try:
        wait_for(lambda: online_values(fs, ENTITIES) == expected, timeout_s, 0.25, "online parity")
    except TimeoutError:
        got = online_values(fs, ENTITIES)
        diffs = [
            f"{entity} {name}: online {got[entity].get(name)!r} != recomputed {value!r}"
            for entity, row in expected.items()
            for name, value in row.items()
            if got[entity].get(name) != value
        ]
        raise AssertionError(
            "online values differ from a recomputation:\n" + "\n".join(diffs)
        ) from None


@dataclass
class KilledRun:
    """One run of the worker killed with SIGKILL three times, then left to finish."""

    settings: Settings
    events: list[Event]


@pytest.fixture(scope="module")
def killed_run(
    tmp_path_factory: pytest.TempPathFactory, make_module_settings: SettingsFactory
) -> KilledRun:
    """Run the kill -9 scenario once for the tests that check its outcome."""
    tmp_path = tmp_path_factory.mktemp("kill9")
    settings = make_module_settings(
        kafka=True,
        s3=True,
        redis=True,
        STORE_DIR=str(tmp_path / "store"),
        FEAST_REPO_DIR=str(tmp_path / "repo"),
        TOPIC_PARTITIONS=2,
    )
    TradeloopFeatureStore(settings).apply()
    events = list(synthetic_events(8000))
    chunks = [events[i : i + 2000] for i in range(0, len(events), 2000)]
    env = settings_env(settings)
    produce(settings, chunks[0])
    landed = 0
    for round_no in range(3):
        worker = WorkerProcess(
            settings, tmp_path / f"worker-{round_no}.log", args=FAST, env=env
        ).start()
        try:
            target = landed + 400
            read = lake_reads(settings, lambda w=worker: SINK_UP in w.log())  # type: ignore[misc]

            def progress(t: int = target, r: Callable[[], Counter[str] | None] = read) -> int:
                ids = r()
                n = sum(ids.values()) if ids is not None else 0
                return n if n >= t else 0

            landed = wait_for(progress, 120, 0.3, f"progress before kill {round_no + 1}")
            produce(settings, chunks[round_no + 1])  # more arrives while it works
            time.sleep(0.3)
        finally:
            worker.kill()  # SIGKILL: no flush, no commit, no leave-group
        assert worker.proc is not None and worker.proc.returncode == -9
    last = WorkerProcess(settings, tmp_path / "worker-final.log", args=FAST, env=env).start()
    try:
        wait_landed(settings, events, 240, sink_up=lambda: SINK_UP in last.log())
        # the final worker also settles the online store (or the parity test says what differs)
        with contextlib.suppress(AssertionError):
            wait_online(settings, events, 90)
        assert last.alive
    finally:
        last.stop()
    return KilledRun(settings, events)


def test_kill_9_three_times_lands_every_event_once(killed_run: KilledRun) -> None:
    assert_exactly_once(killed_run.settings, killed_run.events)


def test_kill_9_three_times_online_equals_recomputation(killed_run: KilledRun) -> None:
    wait_online(killed_run.settings, killed_run.events, 5)


class TcpProxy:
    """A loopback TCP proxy that can refuse every connection for a while (an S3 outage)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.up()

    def up(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        """Close the listener and every open connection: S3 becomes unreachable."""
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            server.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


def committed_offsets(
    settings: Settings, group: str, topics: list[str]
) -> dict[tuple[str, int], int | None]:
    async def read() -> dict[tuple[str, int], int | None]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            out: dict[tuple[str, int], int | None] = {}
            for t in topics:
                for p in range(settings.topic_partitions):
                    out[(t, p)] = await consumer.committed(TopicPartition(settings.topic(t), p))
            return out
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_s3_unreachable_retries_keeps_offsets_uncommitted_and_loses_nothing(
    make_settings: Callable[..., Settings], s3_server: ManagedProcess, tmp_path: Path
) -> None:
    # the session's moto behind a proxy of this test's own: only the proxy goes down
    proxy = TcpProxy(int(s3_server.address.rsplit(":", 1)[1]))
    try:
        settings = make_settings(
            S3_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}",
            S3_BUCKET=TEST_BUCKET,
            LAKE_URI=f"s3://{TEST_BUCKET}/{unique('p')}/lake",
            TOPIC_PARTITIONS=2,
        )
        group = unique("g")
        events = list(synthetic_events(3000))
        produce(settings, events[:1000])
        worker = WorkerProcess(
            settings,
            tmp_path / "worker.log",
            group_id=group,
            args=[*FAST, "--no-feast"],
            env=settings_env(settings),
        ).start()
        try:
            wait_landed(settings, events[:1000], 120, sink_up=lambda: SINK_UP in worker.log())
            topics = ["bars", "signals", "outcomes"]
            before = wait_for(
                lambda: (
                    (c := committed_offsets(settings, f"{group}-lake", topics))
                    and all(v is not None for v in c.values())
                    and c
                ),
                30,
                0.5,
                "lake offsets committed",
            )
            proxy.down()
            produce(settings, events[1000:2000])
            wait_for(
                lambda: worker.log().count("lake flush failed") >= 3,
                90,
                0.5,
                "retries with backoff",
            )
            assert (
                committed_offsets(settings, f"{group}-lake", topics) == before
            )  # nothing committed
            assert worker.alive
            proxy.up()
            produce(settings, events[2000:])
            wait_landed(settings, events, 120)
            assert "lake flush recovered" in worker.log()
            after = committed_offsets(settings, f"{group}-lake", topics)
            assert all((after[k] or 0) > (before[k] or 0) for k in before)
        finally:
            worker.stop()
        assert_exactly_once(settings, events)
    finally:
        proxy.down()


def test_two_workers_share_partitions_and_hand_over_without_loss(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(redis=True, FEAST_REPO_DIR=str(tmp_path / "repo"), TOPIC_PARTITIONS=4)
    TradeloopFeatureStore(settings).apply()
    env = settings_env(settings)
    events = list(synthetic_events(6000))
    produce(settings, events[:2000])
    one = WorkerProcess(settings, tmp_path / "one.log", args=FAST, env=env).start()
    two = WorkerProcess(settings, tmp_path / "two.log", args=FAST, env=env).start()
    try:

        def owns_partitions(worker: WorkerProcess) -> bool:
            resyncs = [line for line in worker.log().splitlines() if "resync:" in line]
            return bool(resyncs) and "partitions []" not in resyncs[-1]

        def shared() -> bool:
            return owns_partitions(one) and owns_partitions(two)

        wait_for(shared, 120, 0.5, "both workers own partitions")
        produce(settings, events[2000:4000])
        wait_for(lambda: sum(lake_event_ids(settings).values()) >= 3000, 120, 0.5, "progress")
        assert two.stop() == 0  # graceful: its partitions move to the other worker

        def owns_all() -> bool:
            resyncs = [line for line in one.log().splitlines() if "resync:" in line]
            return bool(resyncs) and "partitions [0, 1, 2, 3]" in resyncs[-1]

        wait_for(owns_all, 90, 0.5, "the remaining worker owns every partition")
        produce(settings, events[4000:])
        wait_landed(settings, events, 180)
        wait_online(settings, events, 45)  # the lake is in: pushes follow within seconds
        assert one.alive
    finally:
        one.stop()
        two.stop()
    assert_exactly_once(settings, events)
