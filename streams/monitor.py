"""`tradeloop monitor`: watch topics, consumer lag, dead letters, drift, PnL and models.

The monitor is read-only: it consumes with no consumer group (manual `assign`), so
it never joins, rebalances or commits offsets of any group of the system. Topics
start at their end (or at `--from`); `outcomes` starts at midnight UTC (or earlier
with `--from`) so today's PnL is complete, and the compacted `models` topic from its
beginning so the latest release is known. The aggregation lives in
`streams.monitor_state` (pure); this module does the I/O and the drawing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from rich.console import Console

from infra.bus import BusConsumer, KafkaBus
from infra.contracts import TOPICS
from infra.kafka_connection import BrokerUnavailableError
from infra.offsets import EndOffsetUnknownError, true_end_offsets
from infra.settings import Settings, get_settings
from streams.monitor_state import (
    MonitorState,
    compute_lag,
    day_start,
    lag_summary,
    parse_since,
    parse_trader_metrics,
    summarize_trader,
)
from streams.monitor_view import render

__all__ = ["MonitorRunner", "fetch_trader", "monitor", "render"]

log = logging.getLogger(__name__)

ADMIN_TIMEOUT_S = 10.0


def trader_base_url(settings: Settings) -> str:
    """Return the trader's HTTP base URL from `HTTP_HOST`/`HTTP_PORT`."""
    host = settings.http_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{settings.http_port}"


def _get(url: str, timeout_s: float) -> tuple[int, bytes]:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"trader URL must be http(s): {url!r}")
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return int(resp.status), resp.read()


def fetch_trader(base_url: str, timeout_s: float = 1.0) -> dict[str, Any]:
    """Return the trader section from its /healthz (JSON) and /metrics (Prometheus text).

    Any HTTP status is an answer (an unhealthy trader still reports its models);
    only a refused or timed-out connection means "not reachable".
    """
    health: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    error: str | None = None
    try:
        try:
            _, body = _get(f"{base_url}/healthz", timeout_s)
        except urllib.error.HTTPError as exc:  # 503 while degraded still carries JSON
            body = exc.read()
        parsed = json.loads(body)
        health = parsed if isinstance(parsed, dict) else {"status": parsed}
    except (OSError, ValueError) as exc:
        error = f"/healthz: {type(exc).__name__}: {exc}"
    try:
        _, body = _get(f"{base_url}/metrics", timeout_s)
        metrics = parse_trader_metrics(body.decode("utf-8", "replace")) or None
    except (OSError, ValueError) as exc:
        error = error or f"/metrics: {type(exc).__name__}: {exc}"
    return summarize_trader(base_url, health, metrics, error)


@dataclass
class MonitorRunner:
    """Consume every topic of the system and keep a `MonitorState` up to date."""

    settings: Settings
    since: datetime | None = None
    groups: tuple[str, ...] = ()
    trader_url: str | None = None
    rate_window_s: float = 60.0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bus = KafkaBus(self.settings)
        self.bootstrap = self.bus.bootstrap
        self.topic_names = {short: self.settings.topic(short) for short in TOPICS}
        self._short = {full: short for short, full in self.topic_names.items()}
        self.state = MonitorState(day=self.started_at.date(), rate_window_s=self.rate_window_s)
        self._reader: BusConsumer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._assigned: list[TopicPartition] = []
        self._missing: list[str] = []
        self._first_assign_done = False
        self._start_ms: dict[str, int] = {}
        self._lag: dict[str, Any] = lag_summary([], supported=True, notes=["not fetched yet"])
        self._trader: dict[str, Any] = {"reachable": False, "note": "not fetched yet"}

    # Where each topic starts -------------------------------------------------

    def start_time(self, short: str) -> datetime | None:
        """Return where a topic starts: None means its end (or its beginning for models)."""
        if short == "models":
            return None
        if short == "outcomes":
            midnight = day_start(self.started_at)
            return min(self.since, midnight) if self.since else midnight
        return self.since

    # Connections ---------------------------------------------------------------

    async def start(self) -> None:
        """Connect, assign every partition of the system's topics and seek."""
        client = self.bus.connection.client("monitor")
        # no group: nothing to join, nothing ever committed
        reader = await self.bus.consumer((), None, from_beginning=False, client_id=client).start()
        try:
            admin = await self.bus.admin(client_id=f"{client}-admin")
        except BaseException:
            await reader.stop()
            raise
        self._reader, self._consumer, self._admin = reader, reader.raw, admin
        await self._assign()
        self._first_assign_done = True  # partitions found from now on are new topics

    async def stop(self) -> None:
        """Disconnect (there is nothing to commit)."""
        if self._reader is not None:
            await self._reader.stop()
        if self._admin is not None:
            await self._admin.close()

    async def _partitions(self) -> list[TopicPartition]:
        assert self._admin is not None
        # List first: describing a missing topic makes some brokers (Tansu) create it,
        # with default configs, and the monitor must never change the system.
        existing = set(await asyncio.wait_for(self._admin.list_topics(), ADMIN_TIMEOUT_S))
        wanted = [t for t in self.topic_names.values() if t in existing]
        missing = sorted(set(self.topic_names.values()) - existing)
        described = (
            await asyncio.wait_for(self._admin.describe_topics(wanted), ADMIN_TIMEOUT_S)
            if wanted
            else []
        )
        out: list[TopicPartition] = []
        for topic in described:
            if topic.get("error_code"):
                missing.append(topic["topic"])
                continue
            out.extend(TopicPartition(topic["topic"], p["partition"]) for p in topic["partitions"])
        self._missing = sorted(missing)
        return sorted(out)

    async def _assign(self) -> None:
        """Assign new partitions (topics may appear later) and seek only those."""
        assert self._consumer is not None
        tps = await self._partitions()
        new = [tp for tp in tps if tp not in self._assigned]
        if not new:
            return
        keep = {tp: await self._consumer.position(tp) for tp in self._assigned}
        self._consumer.assign(tps)
        for tp, pos in keep.items():
            self._consumer.seek(tp, pos)
        await self._seek(new, appeared=self._first_assign_done)
        self._assigned = tps

    async def _seek(self, tps: list[TopicPartition], appeared: bool = False) -> None:
        """Seek new partitions; one that `appeared` after start is read from its beginning."""
        assert self._consumer is not None
        consumer = self._consumer
        by_time: dict[TopicPartition, int] = {}
        to_begin: list[TopicPartition] = []
        to_end: list[TopicPartition] = []
        for tp in tps:
            short = self._short[tp.topic]
            when = self.start_time(short)
            if short == "models" or (when is None and appeared):
                to_begin.append(tp)  # a topic created while we watched is all new
            elif when is None:
                to_end.append(tp)
            else:
                by_time[tp] = int(when.timestamp() * 1000)
            self.state.covered_since[short] = self.started_at if when is None else when
            # Only a time-based start filters by record time; the end or the beginning does not.
            self._start_ms[short] = int(when.timestamp() * 1000) if when is not None else 0
        # One request per kind: aiokafka resolves each seek call with its own round trip.
        if to_begin:
            await consumer.seek_to_beginning(*to_begin)
        ends = await self._true_ends([*to_end, *by_time])
        for tp in to_end:
            consumer.seek(tp, ends[tp])
        if not by_time:
            return
        found = await consumer.offsets_for_times(by_time)
        for tp in by_time:
            hit = found.get(tp)
            # Kafka answers None past the last record; Tansu answers timestamp -1.
            if hit is None or hit.timestamp < 0:
                consumer.seek(tp, ends[tp])
            else:
                consumer.seek(tp, hit.offset)

    # Consuming ---------------------------------------------------------------

    async def poll(self, timeout_ms: int = 200) -> int:
        """Fold the next batch into the state; return how many records it held."""
        assert self._consumer is not None
        if not self._assigned:
            await asyncio.sleep(timeout_ms / 1000)
            return 0
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        n = 0
        for tp, msgs in batches.items():
            short = self._short[tp.topic]
            floor = self._start_ms.get(short, 0)
            for m in msgs:
                # Tansu seeks by append time; honour --from by record time as well.
                if m.timestamp < floor:
                    continue
                self.state.observe(short, m.value, m.timestamp)
                n += 1
        return n

    async def caught_up(self, targets: dict[TopicPartition, int]) -> bool:
        """Say whether every partition's position reached its target offset."""
        assert self._consumer is not None
        for tp, end in targets.items():
            if await self._consumer.position(tp) < end:
                return False
        return True

    async def end_offsets(self) -> dict[TopicPartition, int]:
        """Return the current end offset of every assigned partition."""
        return await self._true_ends(self._assigned)

    async def _true_ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        # ListOffsets answers short on Tansu (see infra.offsets); a fetch gives the end.
        assert self._consumer is not None
        if not tps:
            return {}
        reported = await self._consumer.end_offsets(tps)
        return await true_end_offsets(self.bus, tps, reported, timeout_s=ADMIN_TIMEOUT_S)

    # Lag -----------------------------------------------------------------------

    async def refresh_lag(self) -> dict[str, Any]:
        """Fetch committed offsets of every consumer group and compute lag per partition."""
        assert self._admin is not None
        admin = self._admin
        notes: list[str] = []
        supported = True
        groups = set(self.groups)
        try:
            listed = await asyncio.wait_for(admin.list_consumer_groups(), ADMIN_TIMEOUT_S)
            groups.update(str(g[0]) for g in listed)
        except (KafkaError, TimeoutError, ValueError, NotImplementedError) as exc:
            supported = False
            notes.append(
                f"this broker does not list consumer groups ({type(exc).__name__}); "
                "pass --group NAME to watch a group's lag"
            )
        try:
            await self._assign()
            ends = await self.end_offsets()
        except (KafkaError, TimeoutError, EndOffsetUnknownError) as exc:
            notes.append(f"end offsets unavailable: {type(exc).__name__}: {exc}")
            self._lag = lag_summary([], supported=False, notes=notes)
            return self._lag
        committed: dict[str, dict[tuple[str, int], int]] = {}
        failed: list[str] = []

        async def one(group: str) -> None:
            # Always name the partitions: Tansu mis-encodes the "all partitions" form.
            try:
                got = await asyncio.wait_for(
                    admin.list_consumer_group_offsets(group, partitions=self._assigned),
                    ADMIN_TIMEOUT_S,
                )
            except (KafkaError, TimeoutError, ValueError) as exc:
                failed.append(f"{group} ({type(exc).__name__})")
                return
            offsets = {(tp.topic, tp.partition): om.offset for tp, om in got.items()}
            if any(o >= 0 for o in offsets.values()):
                committed[group] = offsets

        sem = asyncio.Semaphore(8)

        async def limited(group: str) -> None:
            async with sem:
                await one(group)

        if self._assigned:
            await asyncio.gather(*(limited(g) for g in sorted(groups)))
        if failed:
            notes.append("offsets unavailable for groups: " + ", ".join(sorted(failed)))
        rows = compute_lag(committed, {(tp.topic, tp.partition): o for tp, o in ends.items()})
        if self._missing:
            notes.append("topics not created yet: " + ", ".join(self._missing))
        self._lag = lag_summary(rows, supported=supported, notes=notes)
        return self._lag

    async def refresh_trader(self) -> dict[str, Any]:
        """Ask the trader's HTTP API for its models (in a thread; never blocks the loop)."""
        url = self.trader_url or trader_base_url(self.settings)
        self._trader = await asyncio.to_thread(fetch_trader, url)
        return self._trader

    def snapshot(self, now: datetime | None = None) -> dict[str, Any]:
        """Return the current picture as a JSON-ready dict."""
        now = now or datetime.now(UTC)
        if now.date() != self.state.day:  # a new UTC day: today's PnL starts again
            self.state.roll_day(now.date())
        return self.state.snapshot(
            now,
            topic_names=self.topic_names,
            lag=self._lag,
            trader=self._trader,
            meta={
                "bootstrap": self.bootstrap,
                "topic_prefix": self.settings.topic_prefix,
                "started_from": self.since.isoformat() if self.since else "end",
                "notes": list(self.notes),
            },
        )


# The command -----------------------------------------------------------------------


async def _run_once(runner: MonitorRunner, window_s: float, timeout_s: float) -> dict[str, Any]:
    """Catch up to the end offsets seen at start, watch `window_s` more, then snapshot."""
    await runner.start()
    try:
        targets = await runner.end_offsets()
        t0 = time.monotonic()
        trader_task = asyncio.create_task(runner.refresh_trader())
        while True:
            await runner.poll(200)
            elapsed = time.monotonic() - t0
            if elapsed >= window_s and await runner.caught_up(targets):
                break
            if elapsed >= timeout_s:
                runner.notes.append(
                    f"did not catch up within {timeout_s:.0f}s; figures are partial"
                )
                break
        await runner.refresh_lag()
        await trader_task
        return runner.snapshot()
    finally:
        await runner.stop()


async def _run_live(runner: MonitorRunner, refresh_s: float, console: Console) -> None:
    from rich.live import Live

    await runner.start()
    pending: set[asyncio.Task[Any]] = set()
    last_lag = last_trader = 0.0
    try:
        with Live(render(runner.snapshot()), console=console, refresh_per_second=4) as live:
            last_draw = 0.0
            while True:
                await runner.poll(200)
                now = time.monotonic()
                if now - last_lag >= max(5.0, refresh_s) and not any(
                    t.get_name() == "lag" for t in pending
                ):
                    last_lag = now
                    pending.add(asyncio.create_task(runner.refresh_lag(), name="lag"))
                if now - last_trader >= max(2.0, refresh_s) and not any(
                    t.get_name() == "trader" for t in pending
                ):
                    last_trader = now
                    pending.add(asyncio.create_task(runner.refresh_trader(), name="trader"))
                for task in [t for t in pending if t.done()]:
                    pending.discard(task)
                    if task.exception() is not None:
                        log.warning("monitor refresh failed: %s", task.exception())
                if now - last_draw >= refresh_s:
                    last_draw = now
                    live.update(render(runner.snapshot()))
    finally:
        for task in pending:
            task.cancel()
        await runner.stop()


@click.command()
@click.option("--once", is_flag=True, help="Print one snapshot and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON (with --once).")
@click.option(
    "--from",
    "since",
    default=None,
    metavar="T",
    help="Start at a time: ISO (2024-05-01T13:30Z) or ago (15m, 2h, 1d). Default: the end.",
)
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="NAME",
    help="Also watch this consumer group's lag (needed if the broker cannot list groups).",
)
@click.option(
    "--window",
    "window_s",
    default=2.0,
    show_default=True,
    help="--once: seconds to watch after catching up.",
)
@click.option(
    "--timeout",
    "timeout_s",
    default=30.0,
    show_default=True,
    help="--once: give up catching up after this many seconds.",
)
@click.option(
    "--refresh", "refresh_s", default=1.0, show_default=True, help="Live: seconds between redraws."
)
@click.option(
    "--rate-window",
    "rate_window_s",
    default=60.0,
    show_default=True,
    help="Seconds over which msg/s is averaged.",
)
@click.option(
    "--trader-url", default=None, help="Trader HTTP base URL (default http://HTTP_HOST:HTTP_PORT)."
)
def monitor(
    once: bool,
    as_json: bool,
    since: str | None,
    groups: tuple[str, ...],
    window_s: float,
    timeout_s: float,
    refresh_s: float,
    rate_window_s: float,
    trader_url: str | None,
) -> None:
    """Watch topics, consumer lag, dead letters, drift, today's PnL and the models live."""
    if as_json and not once:
        raise click.UsageError("--json needs --once (a live view is for terminals)")
    now = datetime.now(UTC)
    try:
        start = parse_since(since, now) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--from") from None
    runner = MonitorRunner(
        get_settings(),
        since=start,
        groups=groups,
        trader_url=trader_url,
        rate_window_s=rate_window_s,
        started_at=now,
    )
    console = Console()
    try:
        if once:
            snap = asyncio.run(_run_once(runner, window_s, timeout_s))
            if as_json:
                click.echo(json.dumps(snap, indent=2, default=str))
            else:
                console.print(render(snap))
            return
        asyncio.run(_run_live(runner, refresh_s, console))
    except BrokerUnavailableError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass
