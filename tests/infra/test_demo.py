"""A shortened `tradeloop demo` against the real broker, moto S3 and Redis."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.lake import read_topic
from infra.settings import Settings
from tests.conftest import SettingsFactory
from tests.helpers import settings_env


async def _topic_ids(settings: Settings, topic: str) -> list[str]:
    """Read a whole topic from the beginning (no group) and return its event ids."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        name = f"{settings.topic_prefix}{topic}"
        tps = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        ids: list[str] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                ids.extend(json.loads(m.value)["event_id"] for m in msgs)
        return ids
    finally:
        await consumer.stop()


pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.s3, pytest.mark.redis]


@pytest.mark.timeout(420)
def test_shortened_demo_swaps_and_lands_every_signal_once(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(kafka=True, s3=True, redis=True, MODEL_POLL_SEC=2)
    env = settings_env(settings)
    env["TRADELOOP_HOME"] = str(tmp_path / "home")
    exe = Path(sys.executable).parent / "tradeloop"
    proc = subprocess.run(
        [
            str(exe), "demo", "--json",
            "--speed", "2400", "--train-after", "12", "--second-round-after", "4",
            "--synthetic-bars", "8000",
        ],
        env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)

    # a release was published and the trader hot-swapped to it while trading
    assert summary["releases"], summary["training_rounds"]
    assert summary["swaps"] >= 1
    assert summary["serving_release"] == summary["releases"][-1]["release"]
    assert summary["training_rounds"][1]["gate"] in {"release", "refused"}
    assert summary["store"].startswith("s3://")

    # every signal of the run is in the lake exactly once
    signals = read_topic(settings.lake, "signals", settings=settings)
    ids = signals.column("event_id").to_pylist()
    kafka_ids = asyncio.run(_topic_ids(settings, "signals"))
    assert len(ids) == len(set(ids)) > 0, "a signal landed twice"
    assert len(kafka_ids) == len(set(kafka_ids)), "a signal was sent twice"
    assert set(ids) == set(kafka_ids), (set(ids) ^ set(kafka_ids), summary["events_per_topic"])
    outcomes = read_topic(settings.lake, "outcomes", settings=settings)
    outcome_ids = asyncio.run(_topic_ids(settings, "outcomes"))
    assert sorted(outcomes.column("event_id").to_pylist()) == sorted(outcome_ids)
    counted = {t: summary["events_per_topic"][t] for t in ("signals", "outcomes")}
    assert counted == {"signals": len(kafka_ids), "outcomes": len(outcome_ids)}
    assert summary["lake_rows"]["features"] > 0

    # every artifact of every release lies in the versioned bucket
    for release in summary["releases"]:
        assert set(release["artifacts"]) == {"meta", "exec", "sizer"}
        assert all(
            uri.startswith(f"s3://{settings.bucket}/models/")
            for uri in release["artifacts"].values()
        )
