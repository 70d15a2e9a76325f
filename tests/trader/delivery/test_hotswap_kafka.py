"""The hot swapper against the real Tansu broker and moto S3.

Start-up from the compacted `models` topic (newest valid release first), start-up
from `latest.json` when the topic is empty, the `latest.json` poll fallback, live
releases on the topic (a good one swaps, a bad one is rejected while the previous
set serves), and a broker that is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from infra.bus import KafkaBus, topic_settings
from infra.faultproxy import FaultProxy
from infra.settings import Settings
from infra.signing import Keyring
from infra.stack import free_port
from tests.helpers import TEST_HMAC_KEY, s3_bucket_for, unique
from tests.hotswap_support import Publisher, release_bytes
from tests.infra.test_offsets import SHORT_BATCHES, SLOW_S3_MS
from tests.kit.durable import DurableBroker
from trader import metrics
from trader.delivery.hotswap import HotSwapper
from trader.delivery.models import ModelHolder

pytestmark = [pytest.mark.kafka, pytest.mark.s3]


@pytest.fixture
def settings(make_settings: Callable[..., Settings], s3_server: Any) -> Settings:
    """Settings on the session broker and a fresh bucket of the test's own."""
    bucket = s3_bucket_for(s3_server.address, unique("hk"))
    return make_settings(kafka=True, s3=True, S3_BUCKET=bucket)


async def until(cond: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
    """Wait for a condition (polling the event loop), or fail."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(swapper: HotSwapper) -> AsyncIterator[HotSwapper]:
    """Run the swapper as a background task; stop it on exit and check it ended cleanly."""
    stop = asyncio.Event()
    task = asyncio.create_task(swapper.run(stop))
    try:
        yield swapper
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)
        assert task.exception() is None


def test_startup_takes_the_newest_valid_release_then_follows_the_topic(
    settings: Settings,
) -> None:
    pub = Publisher(settings)
    holder = ModelHolder()

    async def scenario() -> None:
        await pub.to_topic(release_bytes(settings, 1))
        await pub.to_topic(release_bytes(settings, 2))
        forged = Keyring({"k7": TEST_HMAC_KEY.encode()}, "k7")
        await pub.to_topic(release_bytes(settings, 3, keyring=forged))
        swapper = HotSwapper(settings, holder, poll_sec=3600)
        async with running(swapper):
            await asyncio.wait_for(swapper.ready.wait(), 40)
            # r3 (newest, unknown key) is rejected; r2 serves; r1 is never loaded
            assert holder.current.release == "r2"
            assert swapper.swaps == 1 and holder.swaps == 1
            assert swapper.rejections == {"unknown_key_id": 1}
            assert swapper.status()["source"]["kafka_connected"] is True

            # a live release on the topic swaps between two decisions
            await pub.to_topic(release_bytes(settings, 4))
            await until(lambda: holder.current.release == "r4", what="r4 to serve")
            assert swapper.status()["last_swap"]["source"].startswith("topic@")

            # a bad live release is rejected; r4 keeps serving
            wrong = Keyring({"k1": b"wrong"}, "k1")
            await pub.to_topic(release_bytes(settings, 5, keyring=wrong))
            await until(lambda: swapper.rejections["bad_signature"] == 1, what="rejection")
            assert holder.current.release == "r4"
            status = swapper.status()
            assert status["last_rejection"]["code"] == "bad_signature"
            assert status["last_rejection"]["sequence"] == 5
            assert status["last_rejection"]["verified"] is False
            # a release for another model set (another key) is not ours: ignored
            await pub.to_topic(release_bytes(settings, 6, model_set="other"), key="other")
            await pub.to_topic(release_bytes(settings, 7))
            await until(lambda: holder.current.release == "r7", what="r7 to serve")
            assert swapper.rejections == {"unknown_key_id": 1, "bad_signature": 1}

    asyncio.run(scenario())


def test_startup_reads_latest_json_when_the_topic_is_empty(settings: Settings) -> None:
    pub = Publisher(settings)
    pub.to_latest(release_bytes(settings, 3))
    holder = ModelHolder()

    async def scenario() -> None:
        swapper = HotSwapper(settings, holder, poll_sec=3600)
        async with running(swapper):
            await asyncio.wait_for(swapper.ready.wait(), 40)
            assert holder.current.release == "r3"
            assert swapper.status()["last_swap"]["source"] == "latest.json"
            assert swapper.status()["sequence"] == 3

    asyncio.run(scenario())


def test_latest_json_is_polled_as_a_fallback(settings: Settings) -> None:
    pub = Publisher(settings)
    holder = ModelHolder()

    async def scenario() -> None:
        swapper = HotSwapper(settings, holder, poll_sec=0.2)
        async with running(swapper):
            await asyncio.wait_for(swapper.ready.wait(), 40)
            assert holder.current.empty  # nothing published anywhere yet
            # training wrote latest.json but its topic publish was lost
            pub.to_latest(release_bytes(settings, 1))
            await until(lambda: holder.current.release == "r1", what="poll to swap r1")
            assert swapper.status()["last_swap"]["source"] == "latest.json"
            polls_before = swapper.last_poll_at
            await until(lambda: swapper.last_poll_at != polls_before, what="another poll")
            # re-reading the serving release changes nothing and counts nothing
            assert swapper.swaps == 1 and swapper.rejections == {}
            # the topic still works beside the poll
            await pub.to_topic(release_bytes(settings, 2))
            await until(lambda: holder.current.release == "r2", what="r2 from the topic")

    asyncio.run(scenario())


def test_a_broker_that_is_down_never_crashes_the_trader(
    make_settings: Callable[..., Settings], s3_server: Any
) -> None:
    bucket = s3_bucket_for(s3_server.address, unique("hk"))
    down = make_settings(
        kafka=False,
        s3=True,
        S3_BUCKET=bucket,
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        KAFKA_REQUEST_TIMEOUT_MS=2000,
    )
    Publisher(down).to_latest(release_bytes(down, 1))
    holder = ModelHolder()

    def kafka_errors_counted() -> float:
        series = "tradeloop_model_swap_errors_total"
        return metrics.REGISTRY.get_sample_value(series, {"kind": "kafka"}) or 0.0

    async def scenario() -> None:
        counted_before = kafka_errors_counted()
        swapper = HotSwapper(down, holder, poll_sec=3600)
        async with running(swapper):
            await asyncio.wait_for(swapper.ready.wait(), 40)
            # the start-up fell back to latest.json
            assert holder.current.release == "r1"
            await until(lambda: swapper.loop_errors["kafka"] >= 2, what="a retry", timeout_s=40)
            status = swapper.status()
            assert status["source"]["kafka_connected"] is False
            assert status["last_error"]["kind"] == "kafka"
            assert status["release"] == "r1"
            # each error is on the trader's /metrics, under the dashboards' series name
            assert kafka_errors_counted() - counted_before >= 2
            assert b'tradeloop_model_swap_errors_total{kind="kafka"}' in metrics.render()

    asyncio.run(scenario())


def test_startup_reads_past_a_short_listoffsets_answer_to_the_newest_release(
    proxied_durable_broker: tuple[DurableBroker, FaultProxy],
    make_settings: Callable[..., Settings],
    s3_server: Any,
) -> None:
    # Tansu on S3 answers ListOffsets with the first batch of the newest second + 1:
    # a catch-up that stops there serves an older release than the topic's newest.
    broker, s3 = proxied_durable_broker
    bucket = s3_bucket_for(s3_server.address, unique("hk"))
    settings = make_settings(s3=True, S3_BUCKET=bucket, KAFKA_BOOTSTRAP_SERVERS=broker.address)
    bus = KafkaBus(settings)
    topic = bus.topic("models")
    holder = ModelHolder()

    async def scenario() -> tuple[int, int, int]:
        await bus.ensure_topics(topic_settings(bus, ["models"]))

        def burst(attempt: int) -> list[bytes]:  # ends with a newer release than any before
            older = release_bytes(settings, 2 * attempt + 1)
            return [older] * 23 + [release_bytes(settings, 2 * attempt + 2)]

        values, reported, end = await broker.write_short_burst(topic, burst, SHORT_BATCHES)
        attempt = len(values) // 24 - 1
        s3.set("slow", latency_ms=SLOW_S3_MS)  # a fetch answers with a few batches
        swapper = HotSwapper(settings, holder, poll_sec=3600)
        async with running(swapper):
            await asyncio.wait_for(swapper.ready.wait(), 60)
        return reported, end, 2 * attempt + 2

    reported, end, newest_sequence = asyncio.run(scenario())
    assert reported <= end - SHORT_BATCHES
    assert holder.current.release == f"r{newest_sequence}"
