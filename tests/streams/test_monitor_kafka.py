"""`tradeloop monitor --once --json` against the real Tansu broker."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from infra.bus import KafkaBus, Record, topic_settings
from infra.contracts import Event, encode, event_key, topic_for
from infra.offsets import read_topics_to_end
from infra.settings import Settings
from infra.stack import free_port
from streams.monitor import MonitorRunner
from tests.conftest import SettingsFactory
from tests.helpers import settings_env, unique, wait_until
from tests.kit.durable import DurableBroker
from tests.kit.events import bar, dead_letter, drift, manifest, outcome

pytestmark = pytest.mark.kafka

TRADELOOP = [sys.executable, "-c", "from infra.cli import main; main()"]


async def _send(bus: KafkaBus, events: list[Event]) -> None:
    async with bus.producer() as producer:
        for ev in events:
            await producer.send(bus.topic(topic_for(ev)), encode(ev), event_key(ev))


async def _commit_group(bus: KafkaBus, group: str, topic: str, wanted: int) -> dict[int, int]:
    """Consume `wanted` records of a topic in a fresh group, commit all but the last."""
    consumer = bus.consumer([bus.topic(topic)], group)
    await consumer.start()
    try:
        got: list[Record] = []
        deadline = time.monotonic() + 30
        while len(got) < wanted and time.monotonic() < deadline:
            got += await consumer.poll(500)
        assert len(got) == wanted
        last = max(got, key=lambda r: r.offset)
        offsets = {(r.topic, r.partition): r.offset + 1 for r in got}
        offsets[(last.topic, last.partition)] = last.offset  # leave one record of lag
        await consumer.commit(offsets)
        return {p: o for (_, p), o in offsets.items()}
    finally:
        await consumer.stop()


async def _record_times(bus: KafkaBus, topic: str) -> dict[bytes | None, list[int]]:
    """Return the record timestamps (ms) of a whole topic, by key, read to its end."""
    times: dict[bytes | None, list[int]] = {}

    def take(msgs: list[Any]) -> None:
        for m in msgs:
            times.setdefault(m.key, []).append(m.timestamp)

    await asyncio.wait_for(read_topics_to_end(bus, [bus.topic(topic)], take), 30)
    return times


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _a_later_time(after_ms: int) -> datetime:
    """Return the current time once the clock has passed `after_ms`."""

    def later() -> datetime | None:
        now = datetime.now(UTC)
        return now if int(now.timestamp() * 1000) > after_ms else None

    return wait_until(later, 5, interval_s=0.001, what=f"the clock to pass {after_ms} ms")


async def _groups(settings: Settings) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        return {str(g[0]) for g in await admin.list_consumer_groups()}
    finally:
        await admin.close()


def _monitor(settings: Settings, *args: str) -> dict[str, Any]:
    """Run `tradeloop monitor --once --json` in this process (the command as a process is
    run by the tests of the running trader, a bad --from and a broker that is down)."""
    from click.testing import CliRunner

    from infra.settings import get_settings
    from streams.monitor import monitor

    env = settings_env(settings)
    env["HTTP_PORT"] = str(free_port())  # nothing listens there: the trader is not running
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            monitor, ["--once", "--json", "--window", "0.5", *args], env=env
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, f"{result.stderr}{result.exception!r}"
    return dict(json.loads(result.stdout))


def test_monitor_once_json_reports_what_was_produced(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    bus = KafkaBus(settings)
    asyncio.run(bus.ensure_topics(topic_settings(bus)))
    now = datetime.now(UTC)
    events: list[Event] = [
        outcome(now, "ES", "S2", 250.0, 1.0),
        outcome(now, "ES", "S2", -125.0, -0.5),
        outcome(now, "NQ", "S3", 400.0, 2.0),
        outcome(now, "NQ", "S3", 900.0, 3.0, counterfactual=True),
        dead_letter(now, "field 'close': Input should be greater than 0"),
        drift(now),
        manifest(now - timedelta(minutes=10), "rel-1", 1),
        manifest(now - timedelta(minutes=5), "rel-2", 2),
        *[bar(now, "ES", 5000 + i) for i in range(6)],
    ]
    asyncio.run(_send(bus, events))
    group = unique("g-streams-")
    committed = asyncio.run(_commit_group(bus, group, "bars", 6))
    groups_before = asyncio.run(_groups(settings))

    snap = _monitor(settings, "--from", "10m")

    assert snap["topic_prefix"] == settings.topic_prefix
    topics = snap["topics"]
    assert topics["outcomes"]["messages"] == 4
    assert topics["bars"]["messages"] == 6
    assert topics["dlq"]["messages"] == 1
    assert topics["models"]["messages"] == 2
    assert topics["bars"]["rate_per_s"] > 0
    pnl = snap["pnl"]
    assert pnl["day"] == now.date().isoformat()
    rows = {(r["symbol"], r["strategy"]): r for r in pnl["by_symbol_strategy"]}
    assert rows[("ES", "S2")]["trades"] == 2
    assert rows[("ES", "S2")]["win_rate"] == 0.5
    assert rows[("ES", "S2")]["pnl_usd"] == 125.0
    assert rows[("ES", "S2")]["avg_r"] == 0.25
    assert rows[("NQ", "S3")]["trades"] == 1  # the counterfactual is not a trade
    assert rows[("NQ", "S3")]["pnl_usd"] == 400.0
    assert pnl["total"]["pnl_usd"] == 525.0
    assert pnl["counterfactuals_ignored"] == 1
    assert snap["dead_letters"]["count"] == 1
    assert snap["dead_letters"]["latest"][0]["reason"].startswith("field 'close'")
    assert snap["drift"]["count"] == 1
    assert snap["models"]["latest"]["release"] == "rel-2"
    assert 250 < snap["models"]["latest"]["age_s"] < 400
    assert snap["trader"]["reachable"] is False
    assert snap["trader"]["note"] == "trader not reachable"
    assert snap["decode_errors"] == {}

    # lag: Tansu lists groups and fetches offsets when the partitions are named
    assert snap["lag"]["supported"] is True
    mine = [r for r in snap["lag"]["partitions"] if r["group"] == group]
    assert {r["partition"]: r["committed"] for r in mine} == committed
    assert all(r["topic"] == settings.topic("bars") for r in mine)
    assert sum(r["lag"] for r in mine) == 1
    assert snap["lag"]["total_by_group"][group] == 1
    # read-only: the monitor joined no group and committed nothing
    assert asyncio.run(_groups(settings)) == groups_before


def test_monitor_starts_at_the_end_or_at_a_time(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    bus = KafkaBus(settings)
    asyncio.run(bus.ensure_topics(topic_settings(bus)))
    now = datetime.now(UTC)
    asyncio.run(_send(bus, [bar(now, "ES", 5000 + i) for i in range(5)]))
    asyncio.run(_send(bus, [outcome(now, "ES", "S6", 80.0, 0.4)]))
    # Every record is stamped (created and appended) by the time its send is acked, so
    # `middle` is later than all of them, and everything sent afterwards is later still.
    middle = _a_later_time(_now_ms())
    _a_later_time(int(middle.timestamp() * 1000))
    asyncio.run(_send(bus, [bar(now, "NQ", 18000 + i) for i in range(3)]))
    stamps = asyncio.run(_record_times(bus, "bars"))
    middle_ms = int(middle.timestamp() * 1000)
    assert max(stamps[b"ES"]) < middle_ms < min(stamps[b"NQ"]), (stamps, middle_ms)

    from_end = _monitor(settings)
    assert from_end["started_from"] == "end"
    assert from_end["topics"]["bars"]["messages"] == 0
    # today's PnL is complete even from the end: outcomes start at midnight UTC
    assert from_end["pnl"]["total"]["trades"] == 1

    from_middle = _monitor(settings, "--from", middle.isoformat())
    assert from_middle["topics"]["bars"]["messages"] == 3

    everything = _monitor(settings, "--from", "1h")
    assert everything["topics"]["bars"]["messages"] == 8


def test_monitor_rejects_a_bad_from() -> None:
    proc = subprocess.run(
        [*TRADELOOP, "monitor", "--once", "--from", "yesterday"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--from 'yesterday'" in proc.stderr


def test_monitor_reads_the_running_trader(make_settings: SettingsFactory, tmp_path: Path) -> None:
    settings = make_settings()
    topics_bus = KafkaBus(settings)
    asyncio.run(topics_bus.ensure_topics(topic_settings(topics_bus)))
    env = settings_env(settings)
    env["HTTP_PORT"] = str(free_port())
    log = (tmp_path / "trader.log").open("wb")
    trader = subprocess.Popen(
        [*TRADELOOP, "trade", "--feed", "sim", "--speed", "60"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{env['HTTP_PORT']}/healthz"

        def serving() -> bool:
            assert trader.poll() is None, (tmp_path / "trader.log").read_text()
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return True
            except OSError:
                return False

        wait_until(serving, 60, interval_s=0.2, what=f"the trader to answer {url}")
        proc = subprocess.run(
            [*TRADELOOP, "monitor", "--once", "--json", "--window", "0.5"],
            env=env, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)["trader"]
        assert got["reachable"] is True
        assert got["url"] == f"http://127.0.0.1:{env['HTTP_PORT']}"
        assert isinstance(got["release"], str) and got["release"]
        assert got["status"] in ("ok", "degraded")
        assert got["outbox_depth"] is not None and got["swaps_total"] == 0
    finally:
        trader.terminate()
        trader.wait(60)
        log.close()


def test_monitor_says_when_the_broker_is_down() -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    proc = subprocess.run(
        [*TRADELOOP, "monitor", "--once", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "cannot reach Kafka" in proc.stderr and proc.stdout == ""


def test_monitor_never_creates_topics(make_settings: SettingsFactory) -> None:
    settings = make_settings()  # a fresh prefix: no topic exists yet
    snap = _monitor(settings)
    assert "topics not created yet" in " ".join(snap["lag"]["notes"])
    assert all(t["messages"] == 0 for t in snap["topics"].values())
    topics = asyncio.run(KafkaBus(settings).list_topics())
    assert not [t for t in topics if t.startswith(settings.topic_prefix)]


def test_a_live_monitor_picks_up_topics_created_after_it_started(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()

    async def scenario() -> dict[str, Any]:
        runner = MonitorRunner(settings, trader_url=f"http://127.0.0.1:{free_port()}")
        await runner.start()
        try:
            assert (await runner.refresh_lag())["notes"]  # nothing exists yet
            bus = KafkaBus(settings)
            await bus.ensure_topics(topic_settings(bus))
            now = datetime.now(UTC)
            await _send(bus, [bar(now, "ES", 5000 + i) for i in range(4)])
            await _send(bus, [outcome(now, "ES", "S2", 90.0, 0.6)])
            await runner.refresh_lag()  # the live loop does this every few seconds
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                await runner.poll(200)
                if runner.state.topics.get("bars", 0) == 4 and runner.state.topics.get("outcomes"):
                    break
            return runner.snapshot()
        finally:
            await runner.stop()

    snap = asyncio.run(scenario())
    assert snap["topics"]["bars"]["messages"] == 4
    assert snap["pnl"]["total"]["pnl_usd"] == 90.0
    assert snap["lag"]["notes"] == []


@pytest.mark.s3
def test_monitor_ends_are_the_fetched_ends_though_listoffsets_answers_short(
    durable_broker: DurableBroker, make_settings: SettingsFactory
) -> None:
    # Tansu on S3 answers ListOffsets with the first batch of the newest second + 1:
    # the lag shown and the monitor's start at the end must use the fetched end.
    settings = make_settings(KAFKA_BOOTSTRAP_SERVERS=durable_broker.address, TOPIC_PARTITIONS=1)
    bus = KafkaBus(settings)
    tp = TopicPartition(bus.topic("bars"), 0)

    async def scenario() -> tuple[int, int, int, int]:
        await bus.ensure_topics(topic_settings(bus, ["bars"]))
        _, reported, end = await durable_broker.write_short_burst(
            tp.topic, lambda _: [b"x"] * 24, 4
        )
        runner = MonitorRunner(settings, trader_url=f"http://127.0.0.1:{free_port()}")
        await runner.start()
        try:
            assert runner._consumer is not None
            position = await runner._consumer.position(tp)
            return reported, end, (await runner.end_offsets())[tp], position
        finally:
            await runner.stop()

    reported, end, shown, position = asyncio.run(scenario())
    assert reported <= end - 4, f"ListOffsets answered {reported} of {end}: not short"
    assert shown == end and position == end
