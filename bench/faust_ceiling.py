"""The ceiling of a Faust worker on this machine: agents that fold nothing.

Runs a faust-streaming app with the worker's settings and the same three agents
(`bars`, `signals`, `outcomes`, each taking batches with `stream.take_events`),
whose bodies only count. Its events/s is what Faust's own per-message path
(consumer thread, conductor, stream, acks) allows before any validation, folding,
emitting, pushing or sinking; the worker cannot be faster.

Run by `bench.bench_stream` as `python -m bench.faust_ceiling BOOTSTRAP PREFIX N OUT`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(bootstrap: str, prefix: str, n: int, timeout_s: float = 600.0) -> float:
    """Run the empty Faust worker over the first n source records; return events/s."""
    return measure_run(bootstrap, prefix, n, timeout_s)[0]


def measure_run(
    bootstrap: str, prefix: str, n: int, timeout_s: float = 600.0
) -> tuple[float, float]:
    """Run the empty Faust worker over the first n source records.

    Return events/s and the process's CPU seconds over the same records (all its
    threads: Faust's loop and its consumer thread).
    """
    with tempfile.TemporaryDirectory(prefix="faust-ceiling-") as tmp:
        out = Path(tmp) / "rate.json"
        proc = subprocess.run(
            [sys.executable, "-m", "bench.faust_ceiling", bootstrap, prefix, str(n), str(out)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=Path(__file__).resolve().parent.parent,
        )
        if not out.exists():
            raise RuntimeError(f"the Faust ceiling run failed: {proc.stderr[-2000:]}")
        report = json.loads(out.read_text())
        return float(report["events_per_s"]), float(report["cpu_s"])


def _main(bootstrap: str, prefix: str, n: int, out: str) -> None:
    from infra import kafka_compat as _kafka_compat  # noqa: F401
    from infra.heap import service_heap
    from streams.faust_tuning import tune_faust
    from streams.processing import SOURCE_TOPICS

    tuning = tune_faust()  # the worker's Faust path: uvloop, batched drain, options

    import faust  # isort: skip

    app = faust.App(
        f"{prefix}faust-ceiling-{time.time_ns()}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="faust-ceiling-"),
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        web_enabled=False,
        topic_disable_leader=True,
        **tuning,
    )
    seen = {"n": 0, "t0": 0.0, "cpu0": 0.0}

    def count(k: int) -> None:
        if not seen["t0"]:
            seen["t0"], seen["cpu0"] = time.perf_counter(), time.process_time()
        seen["n"] += k
        if seen["n"] >= n:
            rate = seen["n"] / max(time.perf_counter() - seen["t0"], 1e-9)
            cpu = time.process_time() - seen["cpu0"]
            Path(out).write_text(json.dumps({"events_per_s": rate, "cpu_s": cpu}))
            os._exit(0)

    for short in SOURCE_TOPICS:
        topic = app.topic(f"{prefix}{short}", key_type=bytes, value_type=bytes)

        async def agent(stream: object) -> None:
            async for events in stream.take_events(1000, within=0.05):  # type: ignore[attr-defined]
                count(len(events))

        agent.__name__ = f"count_{short}"
        app.agent(topic, name=f"count_{short}")(agent)
    # no web server: two runs at once would both bind its default port (6066)
    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    service_heap()  # where the worker settles it: before Faust's worker starts (infra/heap.py)
    app.main()


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
