"""The trader's faults: killed at the outbox's crash points, the broker killed under it.

Every case runs `tradeloop trade` as a real process against the durable broker (Tansu on
S3 storage), restarts it on the same spool, and reads the trader's topics back: every
spooled record is on Kafka exactly once, by event_id. (A full disk: test_trader_disk_full.py.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from infra.bus import KafkaBus
from infra.contracts import decode
from infra.crash import CRASH_ENV, CRASH_EXIT_CODE
from infra.offsets import read_to_end
from infra.settings import Settings, settings_env
from tests.helpers import SettingsFactory, wait_until
from tests.kit.bars import write_bars_csv
from tests.kit.durable import DurableBroker
from trader.core.bar import MarketBar
from trader.feeds.sim import SimFeed
from trader.io.outbox import TRADER_TOPICS, Outbox

pytestmark = pytest.mark.kafka

TRADELOOP = str(Path(sys.executable).with_name("tradeloop"))


def _trade(
    env: dict[str, str], csv: Path, log: Path, speed: float = 0.0
) -> subprocess.Popen[bytes]:
    cmd = [TRADELOOP, "trade", "--feed", f"csv:{csv}", "--symbols", "ES", "--speed", str(speed),
           "--no-api", "--run-id", log.stem, "--drain-timeout", "60"]  # fmt: skip
    return subprocess.Popen(
        cmd, env=env, cwd=log.parent, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def kafka_event_ids(settings: Settings, topics: Iterable[str] = TRADER_TOPICS) -> Counter[str]:
    """Return how often each event_id stands on the trader's topics (read to their true ends)."""

    async def read() -> Counter[str]:
        bus = KafkaBus(settings)
        reader = await bus.consumer((), None).start()
        try:
            await reader.raw.topics()
            names = [bus.topic(t) for t in topics]
            parts = [(n, reader.raw.partitions_for_topic(n) or ()) for n in names]
        finally:
            await reader.stop()
        counts: Counter[str] = Counter()
        tps = [TopicPartition(n, p) for n, ps in parts for p in ps]
        await read_to_end(
            bus, tps, lambda msgs: counts.update(decode(m.value or b"").event_id for m in msgs)
        )
        return counts

    return asyncio.run(read())


def assert_spool_on_kafka_once(
    settings: Settings, spool: Path, topics: Iterable[str] = TRADER_TOPICS
) -> int:
    """Check the drained spool's every record is on Kafka once; return how many."""
    outbox = Outbox(spool)
    total, depth = outbox.next_seq, outbox.depth
    outbox.close()
    assert depth == 0, f"{depth} records still spooled"
    counts = kafka_event_ids(settings, topics)
    dupes = {k: n for k, n in counts.items() if n > 1}
    assert not dupes, f"{len(dupes)} event_ids on Kafka more than once"
    assert sum(counts.values()) == total, f"{sum(counts.values())} on Kafka, {total} spooled"
    return total


@pytest.fixture(scope="module")
def bars() -> list[MarketBar]:
    return list(SimFeed(("ES",), seed=5, days=1))


def _env(settings: Settings, home: Path, **extra: str) -> dict[str, str]:
    env = {**settings_env(settings), "TRADELOOP_HOME": str(home), "EMIT_BARS": "1"}
    env.pop(CRASH_ENV, None)
    return {**env, **extra}


def test_killed_at_each_outbox_crash_point_and_the_broker_killed_nothing_lost_or_doubled(
    durable_broker: DurableBroker,
    make_settings: SettingsFactory,
    bars: list[MarketBar],
    tmp_path: Path,
) -> None:
    """Run 0 dies mid-append, run 1 between an ack and the cursor write; under run 2 the
    broker is killed -9 and started again on its storage."""
    settings = make_settings(KAFKA_BOOTSTRAP_SERVERS=durable_broker.address)
    home, spool = tmp_path / "home", Path(settings.outbox_dir)
    third = len(bars) // 3
    runs = [
        ("outbox.mid_append:150", CRASH_EXIT_CODE, None),
        ("outbox.after_ack_before_cursor:3", CRASH_EXIT_CODE, "cutting a torn tail"),
        (None, 0, "were already on Kafka (an ack lost to a crash)"),
    ]
    for n, (plan, code, restart_says) in enumerate(runs):
        log = tmp_path / f"run{n}.log"
        extra = {CRASH_ENV: plan} if plan else {}
        csv = write_bars_csv(tmp_path / f"{n}.csv", bars[n * third : (n + 1) * third])
        speed = 0.0 if plan else third * 60 / 8.0  # the last run's bars in about 8 s
        before = sum(kafka_event_ids(settings).values())
        proc = _trade(_env(settings, home, **extra), csv, log, speed=speed)
        try:
            if plan is None:  # records flow: kill the broker under the trader, start it again
                wait_until(
                    lambda b=before: sum(kafka_event_ids(settings).values()) > b + 50,  # type: ignore[misc]
                    60,
                    interval_s=0.3,
                    what="the last run's records on Kafka",
                )
                durable_broker.kill()
                durable_broker.start()
            assert proc.wait(180) == code, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
        text = log.read_text()
        if plan:
            assert f"crash point {plan.split(':')[0]}: dying" in text
        if restart_says:
            assert restart_says in text
    assert assert_spool_on_kafka_once(settings, spool) > third
