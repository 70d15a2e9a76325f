"""Drive real worker processes: produce events, start/kill workers, read results.

Used by the guarantee tests and the benchmarks; everything talks to real services.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from features.stream import StreamFeatureState
from infra.bus import KafkaBus, topic_settings
from infra.contracts import Event, encode, event_key, topic_for
from infra.lake import read_topic
from infra.objectstore import store_for_uri
from infra.settings import Settings, settings_env

__all__ = [
    "WorkerProcess",
    "lake_event_ids",
    "online_values",
    "produce",
    "recompute",
    "wait_for",
]


def wait_for(
    cond: Callable[[], Any], timeout_s: float, interval_s: float = 0.5, what: str = ""
) -> Any:
    """Poll `cond` until it returns something truthy; raise TimeoutError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval_s)
    raise TimeoutError(
        f"timed out after {timeout_s:.0f}s waiting for {what or cond} (last: {last!r})"
    )


async def _produce(
    settings: Settings, records: list[tuple[str, bytes | None, bytes | None]]
) -> None:
    bus = KafkaBus(settings)
    await bus.ensure_topics(topic_settings(bus))
    async with bus.producer(linger_ms=20, max_batch_size=256 * 1024) as producer:
        by_topic: dict[str, list[tuple[bytes | None, bytes | None]]] = {}
        for short, key, value in records:
            by_topic.setdefault(short, []).append((key, value))
        for short, recs in by_topic.items():
            for i in range(0, len(recs), 5000):
                # a None value is a tombstone (aiokafka accepts it)
                await producer.send_many(bus.topic(short), recs[i : i + 5000])  # type: ignore[arg-type]


Raw = tuple[str, bytes | None, bytes | None]  # short topic, key, value


def as_record(item: Event | Raw) -> Raw:
    """Return an event (keyed by its symbol) or a raw record as (short topic, key, value)."""
    if isinstance(item, Event):
        return topic_for(item), event_key(item), encode(item)
    return item


def produce(settings: Settings, items: Iterable[Event | Raw]) -> int:
    """Produce events and raw records, keeping their order within each topic; return count."""
    records = [as_record(i) for i in items]
    asyncio.run(_produce(settings, records))
    return len(records)


class WorkerProcess:
    """A `tradeloop streams worker` subprocess."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        *,
        group_id: str = "",
        args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.group_id = group_id
        self.args = list(args)
        self.env = dict(env) if env is not None else settings_env(settings)
        self.env.setdefault("PYTHONUNBUFFERED", "1")  # the log survives a SIGKILL
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start the worker (logs appended to log_path)."""
        script = Path(sys.executable).with_name("tradeloop")
        argv = [str(script)] if script.exists() else [sys.executable, "-m", "infra.cli"]
        argv += ["streams", "worker", *self.args]
        if self.group_id:
            argv += ["--group", self.group_id]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        """Say whether the process still runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker (no cleanup at all) and whatever it started."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self._kill_group()

    def _kill_group(self) -> None:
        # the worker leads its own session: this reaches its lake sink child too
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM the worker and wait; SIGKILL if it does not exit."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._kill_group()
        return self.proc.returncode

    def log(self) -> str:
        """Return the worker's log."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def lake_event_ids(
    settings: Settings, topics: Iterable[str] = ("bars", "signals", "outcomes")
) -> Counter[str]:
    """Count lake rows by event_id over topics."""
    store = store_for_uri(settings.lake, settings)
    counts: Counter[str] = Counter()
    for topic in topics:
        counts.update(
            read_topic(settings.lake, topic, settings=settings, store=store)
            .column("event_id")
            .to_pylist()
        )
    return counts


def recompute(events: Iterable[Event]) -> StreamFeatureState:
    """Fold events from scratch, in production order (which is each partition's order)."""
    state = StreamFeatureState()
    for e in events:
        if topic_for(e) in ("bars", "signals", "outcomes"):
            state.learn(e)  # type: ignore[arg-type]
    return state


def online_values(
    store: Any, entities: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, float | None]]:
    """Read the online store for (symbol, strategy) pairs: {pair: {feature: value}}."""
    out = {}
    for symbol, strategy in entities:
        out[(symbol, strategy)] = {k: v for k, (v, _) in store.online(symbol, strategy).items()}
    return out


def expected_online(
    state: StreamFeatureState, entities: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, float | None]]:
    """Return what the online store must hold for these entities."""
    out = {}
    for symbol, strategy in entities:
        row: dict[str, float | None] = dict(state.symbol_values(symbol))
        row.update(state.strategy_values(symbol).get(strategy, {}))
        out[(symbol, strategy)] = row
    return out
