"""A trader whose spool's disk fills while a position is open, then has room again.

The spool lives on a small tmpfs the test mounts; the test fills it to the last byte
with a file of its own while the trader holds a position with its stop and target
working. The bars come from the `bars` topic, one step at a time. While the disk is
full the trader manages the open position (its exit fills as the uninterrupted run's
did), refuses the next entry the uninterrupted run took (risk hold
`outbox_write_failed`), and raises the alarm on /healthz and /metrics; when the filler
is removed it writes what it held, in order, and every spooled event reaches Kafka
once. (The mid-append crash and a disk that fills for K writes: test_outbox_faults.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.bus import KafkaBus
from infra.contracts import (
    OrderFilled,
    OrderSubmitted,
    SignalSnapshot,
    TradeOutcome,
    decode,
    encode,
    event_key,
)
from infra.offsets import read_topics_to_end
from infra.settings import Settings, settings_env
from infra.stack import free_port
from tests.helpers import SettingsFactory, wait_until
from tests.trader.test_trader_faults import assert_spool_on_kafka_once
from trader.core.bar import MarketBar
from trader.core.engine import Engine, EngineConfig
from trader.feeds.sim import SimFeed
from trader.io.outbox import OUTBOX_HOLD, TRADER_TOPICS

pytestmark = pytest.mark.kafka

TRADELOOP = str(Path(sys.executable).with_name("tradeloop"))


def _scenario() -> tuple[list[MarketBar], TradeOutcome, int, int, SignalSnapshot, int]:
    """Return bars, a trade exiting by stop/target, its fill and exit bars, the next entry."""
    bars = list(SimFeed(("ES",), seed=3, days=3))
    out: list[Any] = []
    engine = Engine(
        Settings(_env_file=None),  # type: ignore[call-arg]
        EngineConfig(symbols=("ES",), source="live", run_id="ref", record_metrics=False),
        sinks=[lambda _t, e: out.append(e)],
    )
    fill_bar: dict[str, int] = {}
    trade: tuple[TradeOutcome, int, int] | None = None
    for i, bar in enumerate(bars):
        n = len(out)
        engine.on_bar(bar)
        for e in out[n:]:
            if isinstance(e, OrderFilled) and e.role == "entry":
                fill_bar[e.client_order_id] = i
            if (
                trade is None
                and isinstance(e, TradeOutcome)
                and not e.counterfactual
                and e.exit_reason in ("stop", "target")
                and i - fill_bar[e.entry_order_id] >= 4
            ):
                trade = (e, fill_bar[e.entry_order_id], i)
            if (
                trade is not None
                and isinstance(e, SignalSnapshot)
                and e.decision.taken
                and i > trade[2]
            ):
                return bars, trade[0], trade[1], trade[2], e, i
    raise AssertionError("no trade lasting 4 bars followed by a taken entry in the sim bars")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """Mount a 512 KiB tmpfs for the spool (the suite runs as root) and unmount it after."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(disk: Path) -> Path:
    """Write a file until the disk is full; return it."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:
        with contextlib.suppress(OSError):
            for _ in range(1 << 16):
                fh.write(b"\0" * 4096)
        with contextlib.suppress(OSError):  # the last partial block
            for _ in range(4096):
                fh.write(b"\0")
    return filler


def _get(port: int, path: str) -> bytes | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return bytes(r.read())
    except OSError:
        return None


def _health(port: int) -> dict[str, Any] | None:
    raw = _get(port, "/healthz")
    return dict(json.loads(raw)) if raw else None


def _produce(settings: Settings, bars: list[MarketBar]) -> None:
    async def send() -> None:
        bus = KafkaBus(settings)
        async with bus.producer() as producer:
            events = [b.to_event("live") for b in bars]
            await producer.send_many(bus.topic("bars"), [(event_key(e), encode(e)) for e in events])

    asyncio.run(send())


def _events(settings: Settings) -> list[Any]:
    async def read() -> list[Any]:
        bus = KafkaBus(settings)
        names = [bus.topic(t) for t in ("orders", "signals", "outcomes")]
        out: list[Any] = []
        await read_topics_to_end(
            bus, names, lambda ms: out.extend(decode(m.value or b"") for m in ms)
        )
        return out

    return asyncio.run(read())


def test_a_full_disk_stops_entries_manages_the_open_position_and_loses_nothing(
    make_settings: SettingsFactory, small_disk: Path, tmp_path: Path
) -> None:
    bars, ref, fill_i, _, next_entry, entry_i = _scenario()
    stem = ref.entry_order_id.removesuffix("-entry")
    settings = make_settings(kafka=True, OUTBOX_DIR=str(small_disk / "outbox"))
    env = {**settings_env(settings), "TRADELOOP_HOME": str(tmp_path / "home")}
    port = free_port()
    log = tmp_path / "trader.log"
    cmd = [TRADELOOP, "trade", "--feed", "kafka", "--from-beginning", "--symbols", "ES",
           "--http-port", str(port), "--run-id", "disk", "--drain-timeout", "60"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        last: dict[str, Any] = {}

        def at(bar_count: int, check: Any = lambda h: True) -> dict[str, Any] | None:
            assert proc.poll() is None, log.read_text()[-3000:]
            h = last["health"] = _health(port)
            return h if h and h["engine"]["bars"] >= bar_count and check(h) else None

        _produce(settings, bars[: fill_i + 2])
        wait_until(lambda: at(fill_i + 2, lambda h: h["venue"]["positions"]), 120, what="entry")
        filler = _fill(small_disk)
        _produce(settings, bars[fill_i + 2 : entry_i + 2])
        full = wait_until(lambda: at(entry_i + 2), 120, what="the bars while the disk is full")
        assert full is not None
        assert full["venue"]["positions"] == []  # the open position was managed: it exited
        assert full["outbox"]["write_failing"] is True and full["outbox"]["held"] > 0
        assert full["outbox"]["write_error"] == "ENOSPC"
        assert full["status"] == "halted" and not full["entries"]["allowed"]
        assert OUTBOX_HOLD in full["entries"]["refused_because"]
        metrics = (_get(port, "/metrics") or b"").decode()
        assert "tradeloop_outbox_write_failing 1.0" in metrics
        assert f"tradeloop_outbox_held {float(full['outbox']['held'])}" in metrics

        filler.unlink()  # room again: what was held is written, in order, bars or no bars
        ok = wait_until(
            lambda: at(entry_i + 2, lambda h: not h["outbox"]["write_failing"]),
            60,
            what=f"the held records written (last /healthz {last})",
        )
        assert ok is not None
        assert ok["outbox"]["held"] == 0 and ok["entries"]["allowed"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert "cannot write to" in log.read_text() and "writes succeed again" in log.read_text()
    spooled = [t for t in TRADER_TOPICS if t != "bars"]  # a live feed's bars are not echoed
    assert assert_spool_on_kafka_once(settings, small_disk / "outbox", spooled) > 0
    events = _events(settings)
    exits = [e for e in events if isinstance(e, OrderFilled) and e.client_order_id.startswith(stem)]
    assert [(e.role, e.fill_price) for e in exits if e.role != "entry"] == [
        (ref.exit_reason, ref.exit_price)
    ]  # the position was managed while the disk was full
    refused = [
        e for e in events
        if isinstance(e, SignalSnapshot) and e.ts_event == next_entry.ts_event
        and e.strategy == next_entry.strategy
    ]  # fmt: skip
    assert [(e.decision.taken, e.decision.reason) for e in refused] == [(False, OUTBOX_HOLD)]
    entries_after = [
        e for e in events
        if isinstance(e, OrderSubmitted) and e.ts_event >= bars[fill_i + 2].ts_event
        and e.client_order_id.endswith("-entry")
    ]  # fmt: skip
    assert entries_after == []
