"""Runs of `tradeloop streams worker` processes for `bench.bench_stream`.

`worker_run` measures one worker on records produced before it starts (so no
producer shares the CPU while the clock runs); `scaling_run` measures 1, 2, 4, ...
workers of one consumer group on topics with more partitions: the workers join and
settle first (every partition owned, no rebalance pending), then the records are
produced (the producer shares the cores with the workers) and the clock runs from
the first record folded by any worker to the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.settings import Settings
from streams.online import PUSH_TIMINGS_ENV

__all__ = ["SOURCE", "BarePush", "WorkerRun", "metrics", "push_p99_ms", "scaling_run", "worker_run"]

SOURCE = ("bars", "signals", "outcomes")
_RESYNC = re.compile(r"resync: queued the latest values of \d+ keys \(partitions \[([0-9, ]*)\]\)")


def metrics(port: int) -> dict[str, float]:
    """Return the worker's `tradeloop_*` Prometheus samples."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tradeloop_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _sum(m: dict[str, float], prefix: str, topics: tuple[str, ...]) -> float:
    return sum(m.get(f'{prefix}{{topic="{t}"}}', 0.0) for t in topics)


def push_p99_ms(m: dict[str, float]) -> float | None:
    """Return the upper bound of the histogram bucket holding the 99th percentile push.

    A cross-check of the per-push durations (`WorkerRun.push_s`), from the metrics.
    """
    prefix = "tradeloop_feast_push_seconds_bucket{le="
    buckets = sorted(
        (float(k[len(prefix) + 1 : -2]), v)
        for k, v in m.items()
        if k.startswith(prefix) and "+Inf" not in k
    )
    total = m.get("tradeloop_feast_push_seconds_count", 0.0)
    if not total:
        return None
    for bound, count in buckets:
        if count >= 0.99 * total:
            return bound * 1000
    return float("inf")


@dataclass
class WorkerRun:
    """What one measured worker run saw."""

    first: float  # perf_counter of the first record folded
    done_agents: float  # ... when every record was folded and emitted
    done_lake: float | None  # ... when every record was in the lake (None without a sink)
    final: dict[str, float] = field(default_factory=dict)  # the last metrics
    rss_mb: float = 0.0
    push_s: list[float] = field(default_factory=list)  # every online push's duration
    cpu_s: float = 0.0  # the worker process's CPU seconds from first to last record folded
    bare_push_s: list[float] = field(default_factory=list)  # `BarePush` meanwhile


def _rss_mb(pid: int) -> float:
    import psutil

    try:
        return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    except psutil.Error:
        return 0.0


def _cpu_s(pid: int) -> float:
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


class BarePush:
    """Time a Redis pipeline shaped like a worker's push, every `interval_s`, from a thread here.

    18 HSETs of 9 fields (the three stream views of 2 symbols x 4 strategies, Feast's
    field and value sizes) with redis-py on the worker's Redis, from a thread of this
    mostly idle process, while a worker runs: the push's latency floor on this
    machine at that moment (the round trip, redis-py and the CPU's queue), with no
    event loop or GIL to share.
    """

    def __init__(self, redis_url: str, interval_s: float = 0.5) -> None:
        self.redis_url = redis_url
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bare-push", daemon=True)

    def start(self) -> BarePush:
        """Start timing pushes."""
        self._thread.start()
        return self

    def stop(self) -> list[float]:
        """Stop; return every push's duration in seconds."""
        self._stop.set()
        self._thread.join(30)
        return self.samples

    def _run(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        keys = [f"bench-bare-push:{os.getpid()}:{i}".encode() for i in range(18)]
        mapping = {os.urandom(4).hex(): os.urandom(11) for _ in range(8)}
        mapping["_ts:view"] = os.urandom(12)
        try:
            while not self._stop.wait(self.interval_s):
                start = time.perf_counter()
                with client.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
                    pipe.execute()
                self.samples.append(time.perf_counter() - start)
        finally:
            client.delete(*keys)
            client.close()


def _ensure_topics(settings: Settings) -> None:
    from infra.bus import KafkaBus, topic_settings

    bus = KafkaBus(settings)
    asyncio.run(bus.ensure_topics(topic_settings(bus)))


def worker_run(
    settings: Settings, tmp: Path, events: list[Any], n: int, args: list[str], name: str
) -> WorkerRun:
    """Produce `events`, then start one worker and time it over the n source records."""
    from infra.stack import free_port
    from tests.kit.harness import WorkerProcess, produce, settings_env

    _ensure_topics(settings)
    produce(settings, events)
    port = free_port()
    env = settings_env(settings)
    env["TRADELOOP_HOME"] = str(tmp / "home")
    timings = tmp / f"{name}-push-seconds.txt"
    timings.unlink(missing_ok=True)
    env[PUSH_TIMINGS_ENV] = str(timings)
    worker = WorkerProcess(
        settings, tmp / f"{name}.log", group_id=f"{settings.topic_prefix}{name}",
        args=["--metrics-port", str(port), *args], env=env,
    ).start()  # fmt: skip
    sink = "--no-sink" not in args
    bare = BarePush(settings.redis_url).start()
    try:
        assert worker.proc is not None
        pid = worker.proc.pid
        first = done_agents = done_lake = None
        cpu_first = cpu_done = 0.0
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            if not worker.alive:
                raise RuntimeError(f"worker {name} exited: {worker.log()[-2000:]}")
            try:
                m = metrics(port)
            except OSError:
                time.sleep(0.1)
                continue
            now = time.perf_counter()
            folded = _sum(m, "tradeloop_stream_events_in_total", SOURCE)
            landed = _sum(m, "tradeloop_lake_events_written_total", SOURCE)
            if first is None and folded > 0:
                first, cpu_first = now, _cpu_s(pid)
            if done_agents is None and folded >= n:
                done_agents, cpu_done = now, _cpu_s(pid)
            if sink and done_lake is None and landed >= n:
                done_lake = now
            if done_agents is not None and (done_lake is not None or not sink):
                break
            time.sleep(0.1)
        if first is None or done_agents is None or (sink and done_lake is None):
            raise RuntimeError(f"worker {name} did not finish: {worker.log()[-2000:]}")
        final, rss = metrics(port), _rss_mb(pid)
    finally:
        worker.stop()
        bare_s = bare.stop()
    push_s = [float(x) for x in timings.read_text().split()] if timings.exists() else []
    return WorkerRun(
        first, done_agents, done_lake, final, rss, push_s, cpu_done - cpu_first, bare_s
    )


def _owned(log: str) -> list[int] | None:
    found = _RESYNC.findall(log)
    if not found:
        return None
    return [int(p) for p in found[-1].split(",") if p.strip()]


def scaling_run(
    settings: Settings, tmp: Path, events: list[Any], n: int, workers: int, args: list[str]
) -> dict[str, float]:
    """Time `workers` processes of one group over n records; return events/s and produce rate."""
    from infra.stack import free_port
    from tests.kit.harness import WorkerProcess, produce, settings_env, wait_for

    _ensure_topics(settings)
    env = settings_env(settings)
    env["TRADELOOP_HOME"] = str(tmp / "home")
    group = f"{settings.topic_prefix}scale{workers}"
    ports = [free_port() for _ in range(workers)]
    procs = [
        WorkerProcess(
            settings,
            tmp / f"scale{workers}-{i}.log",
            group_id=group,
            args=["--metrics-port", str(port), *args],
            env=env,
        ).start()
        for i, port in enumerate(ports)
    ]
    parts = settings.topic_partitions

    def settled() -> bool:
        owned = [_owned(p.log()) for p in procs]
        if any(o is None for o in owned):
            return False
        flat = sorted(x for o in owned for x in (o or []))
        return flat == list(range(parts)) and all(len(o or []) == parts // workers for o in owned)

    try:
        wait_for(settled, 300, 0.5, f"{workers} workers own {parts} partitions")
        time.sleep(2 * settings.kafka_session_timeout_ms / 1000)  # no late rebalance pending
        if not settled():
            wait_for(settled, 300, 0.5, f"{workers} workers settle again")
        # the workers fold while the records are produced: poll from the start, or the
        # clock would begin after production and miss what was folded meanwhile
        produced: dict[str, float] = {}

        def _produce() -> None:
            t0 = time.perf_counter()
            produce(settings, events)
            produced["s"] = time.perf_counter() - t0

        producer = threading.Thread(target=_produce, name="bench-produce", daemon=True)
        producer.start()
        first = done = None
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline and done is None:
            folded = 0.0
            for port in ports:
                with contextlib.suppress(OSError):
                    folded += _sum(metrics(port), "tradeloop_stream_events_in_total", SOURCE)
            now = time.perf_counter()
            if first is None and folded > 0:
                first = now
            if folded >= n:
                done = now
            if not producer.is_alive() and "s" not in produced:
                break  # the producer failed: its traceback is on stderr
            time.sleep(0.1)
        producer.join(60)
        if first is None or done is None or "s" not in produced:
            raise RuntimeError(f"{workers} workers did not finish: {procs[0].log()[-2000:]}")
        return {"events_per_s": n / (done - first), "produce_per_s": n / produced["s"]}
    finally:
        for p in procs:
            p.stop()
