"""The worker while its dependencies fail the way they fail, through the fault proxy.

One worker process; S3 (moto, the lake) blackholed and Redis (the online store)
down, blackholed and flapping in the same run. Features keep flowing to Kafka while
both are out; the lake and the online store catch up when they return; nothing
crashes; every event lands once and the online values equal a recomputation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from features.store import TradeloopFeatureStore
from infra.settings import Settings
from tests.helpers import SettingsFactory, s3_bucket_for, unique
from tests.kit.faults import ProxyKit, read_topics
from tests.kit.harness import WorkerProcess, lake_event_ids, produce, wait_for
from tests.kit.synth import synthetic_events
from tests.streams.test_streams_guarantees import (
    FAST,
    SINK_UP,
    assert_exactly_once,
    wait_landed,
    wait_online,
)


def _on_kafka(settings: Settings, topic: str) -> int:
    return len(asyncio.run(read_topics(settings.bootstrap_servers, [settings.topic(topic)])))


def _count(settings: Settings, topic: str) -> int:
    return sum(lake_event_ids(settings, (topic,)).values())


def test_worker_lives_through_s3_blackholed_and_redis_flapping(
    make_settings: SettingsFactory,
    fault_proxies: ProxyKit,
    s3_server: Any,
    redis_url: str,
    tmp_path: Path,
) -> None:
    s3 = fault_proxies.to(s3_server.address, name="s3")
    redis = fault_proxies.to(redis_url.removeprefix("redis://").split("/")[0], name="redis")
    bucket = s3_bucket_for(s3_server.address, unique("dep-"))
    settings = make_settings(
        S3_ENDPOINT_URL=s3.url,
        S3_BUCKET=bucket,
        LAKE_URI=f"s3://{bucket}/lake",
        S3_CONNECT_TIMEOUT_MS=500,
        S3_READ_TIMEOUT_MS=1000,
        S3_MAX_ATTEMPTS=1,
        REDIS_URL=f"redis://{redis.address}/0",
        REDIS_TIMEOUT_MS=500,
        FEAST_REPO_DIR=str(tmp_path / "repo"),
        TOPIC_PARTITIONS=2,
    )
    # the test reads the lake and the online store around the proxies
    direct = settings.model_copy(
        update={"s3_endpoint_url": s3_server.address, "redis_url": redis_url}
    )
    TradeloopFeatureStore(settings).apply()
    events = list(synthetic_events(3000))
    produce(settings, events[:1000])
    worker = WorkerProcess(settings, tmp_path / "worker.log", args=FAST).start()
    log: Callable[[], str] = worker.log
    try:
        wait_landed(direct, events[:1000], 120, sink_up=lambda: SINK_UP in log())
        features_before = _count(direct, "features")
        on_kafka = _on_kafka(settings, "features")

        # S3 silent and Redis refusing: the worker keeps emitting features to Kafka
        s3.set("blackhole")
        redis.set("refuse")
        produce(settings, events[1000:2000])
        wait_for(lambda: log().count("lake flush failed") >= 2, 60, 0.3, "lake flush retries")
        wait_for(lambda: "Feast push of" in log(), 60, 0.3, "a failed online push")
        wait_for(
            lambda: _on_kafka(settings, "features") > on_kafka,
            60,
            0.5,
            "features flowing to Kafka with S3 and Redis out",
        )
        landed_during = sum(lake_event_ids(direct).values())
        # Redis flaps: back for a moment, then silent; S3 stays silent meanwhile
        redis.heal()
        produce(settings, events[2000:2100])
        wait_for(lambda: "Feast push recovered" in log(), 60, 0.3, "a push while Redis is back")
        fails = log().count("Feast push of")
        redis.set("blackhole")
        produce(settings, events[2100:2200])
        wait_for(
            lambda: log().count("Feast push of") > fails, 60, 0.3, "a push timing out on Redis"
        )
        assert worker.alive
        assert sum(lake_event_ids(direct).values()) == landed_during  # S3 still out
        # everything returns: the lake and the online store catch up
        s3.heal()
        redis.heal()
        produce(settings, events[2200:])
        wait_landed(direct, events, 120)
        wait_online(direct, events, 90)
        assert "lake flush recovered" in log() and "Feast push recovered" in log()
        assert _count(direct, "features") > features_before
        assert worker.alive
    finally:
        worker.kill()  # what it landed is checked; a graceful stop is tested elsewhere
    assert "Traceback" not in worker.log()
    assert_exactly_once(direct, events)
