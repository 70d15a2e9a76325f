"""Run the lake sink in a child process of the worker, on its own core.

The worker starts `python -m streams.sink_process` with its settings in the
environment. The child runs `LakeSink` (own consumer group, commits after upload)
and writes its cumulative counters as one JSON line per interval on stdout; the
parent adds the increments to its own Prometheus counters, so the worker's
/metrics stays complete. The child dies with the parent (PR_SET_PDEATHSIG), so a
killed worker leaves no sink behind, and the parent restarts a child that exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
from dataclasses import asdict, dataclass
from typing import Any

from infra.crash import CRASH_ENV, CRASH_FIRED_ENV
from streams.metrics import StreamMetrics

__all__ = ["SinkOptions", "SinkProcess", "counters", "main"]

log = logging.getLogger(__name__)

_ENV = "TRADELOOP_SINK_OPTIONS"
_PARENT = "TRADELOOP_SINK_PARENT"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class SinkOptions:
    """What the child needs besides the settings."""

    group_id: str
    batch_events: int = 5000
    batch_seconds: float = 5.0
    report_interval_s: float = 0.25


def counters(metrics: StreamMetrics) -> dict[str, float]:
    """Return the sink's counters as {sample name with labels: cumulative value}."""
    out: dict[str, float] = {}
    for metric in (
        metrics.events_in,
        metrics.lake_files,
        metrics.lake_events,
        metrics.lake_retries,
    ):
        for fam in metric.collect():
            for s in fam.samples:
                if s.name.endswith("_total"):
                    out[json.dumps([fam.name, s.labels.get("topic", "")])] = s.value
    return out


def _apply(metrics: StreamMetrics, seen: dict[str, float], now: dict[str, float]) -> None:
    by_name = {
        "tradeloop_stream_events_in": metrics.events_in,
        "tradeloop_lake_files_written": metrics.lake_files,
        "tradeloop_lake_events_written": metrics.lake_events,
    }
    for key, value in now.items():
        delta = value - seen.get(key, 0.0)
        if delta <= 0:
            continue
        seen[key] = value
        name, topic = json.loads(key)
        if name == "tradeloop_lake_flush_retries":
            metrics.lake_retries.inc(delta)
        elif name in by_name:
            by_name[name].labels(topic=topic).inc(delta)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class SinkProcess:
    """Start, supervise and stop the sink child; mirror its counters into `metrics`."""

    def __init__(self, env: dict[str, str], options: SinkOptions, metrics: StreamMetrics) -> None:
        self.env = {
            **env,
            _ENV: json.dumps(asdict(options)),
            _PARENT: str(os.getpid()),
            "PYTHONUNBUFFERED": "1",
        }
        self.metrics = metrics
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False

    async def run(self) -> None:
        """Keep a child running until `stop`; restart it (after 1 s) if it exits."""
        while not self._stopping:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "streams.sink_process",
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=None,  # the worker's log
            )
            seen: dict[str, float] = {}
            assert self.proc.stdout is not None
            async for line in self.proc.stdout:
                with contextlib.suppress(ValueError):
                    _apply(self.metrics, seen, json.loads(line))
            code = await self.proc.wait()
            if self._stopping:
                break
            self.restarts += 1
            if CRASH_FIRED_ENV not in self.env:  # without it a plan fails the first child only
                self.env.pop(CRASH_ENV, None)
            log.error("the lake sink process exited with %s; restarting it in 1 s", code)
            await asyncio.sleep(1.0)

    async def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the child (it lands what it buffered) and wait for it."""
        self._stopping = True
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            log.warning("the lake sink did not stop in %.0fs; killing it", timeout_s)
            proc.kill()
            await proc.wait()


async def _serve(options: SinkOptions) -> None:
    from infra.settings import get_settings
    from streams.sink import LakeSink

    metrics = StreamMetrics()
    sink = LakeSink(
        get_settings(),
        group_id=options.group_id,
        batch_events=options.batch_events,
        batch_seconds=options.batch_seconds,
        metrics=metrics,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def report() -> None:
        sys.stdout.write(json.dumps(counters(metrics)) + "\n")
        sys.stdout.flush()

    async def reporter() -> None:
        while not stop.is_set():
            report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), options.report_interval_s)

    task = asyncio.create_task(reporter())
    try:
        await sink.run(stop)
    finally:
        stop.set()
        await task
        report()


def main(argv: list[str] | None = None) -> int:
    """Run the sink child (options from the environment)."""
    from infra.logging import setup_logging

    _die_with_parent()
    parent = os.environ.get(_PARENT)
    if parent and int(parent) != os.getppid():
        return 1  # the worker died before the child could tie itself to it
    setup_logging(os.environ.get("LOG_LEVEL", "INFO"))
    raw: dict[str, Any] = json.loads(os.environ[_ENV])
    asyncio.run(_serve(SinkOptions(**raw)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
