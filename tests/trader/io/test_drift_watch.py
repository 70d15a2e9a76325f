"""The trader follows the worker's drift alerts into the operator console."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from infra.bus import KafkaBus, topic_settings
from infra.contracts import DriftAlert, encode, event_key
from infra.settings import Settings
from infra.stack import free_port
from tests.conftest import SettingsFactory
from tests.helpers import wait_until_async
from tests.kit.durable import DurableBroker
from trader.io.console import ConsoleFeed
from trader.io.drift_watch import DRIFT_TOPIC, DriftWatcher
from trader.live import TradeOptions, run_trade

pytestmark = pytest.mark.kafka

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def _alert(n: int, symbol: str = "ES", detail: str = "") -> DriftAlert:
    return DriftAlert(
        ts_event=T0 + timedelta(minutes=n),
        symbol=symbol,
        strategy="S1",
        metric="r_multiple",
        detector="adwin",
        value=float(n),
        detail=detail or f"alert {n}",
    )


async def _publish(bus: KafkaBus, records: list[tuple[bytes, bytes]]) -> None:
    await bus.ensure_topics(topic_settings(bus, [DRIFT_TOPIC]))
    async with bus.producer() as producer:
        for key, value in records:
            await producer.send(bus.topic(DRIFT_TOPIC), value, key=key)
        await producer.flush()


def test_the_watcher_shows_recent_alerts_then_follows_and_skips_garbage(
    make_settings: SettingsFactory,
) -> None:
    settings: Settings = make_settings(kafka=True, TOPIC_PARTITIONS=1)
    bus = KafkaBus(settings)
    console = ConsoleFeed()

    async def main() -> DriftWatcher:
        # 15 alerts before the trader starts: the console gets the latest 10
        await _publish(bus, [(event_key(a), encode(a)) for a in map(_alert, range(15))])
        watcher = DriftWatcher(bus, console, recent=10, poll_timeout_ms=100)
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        try:
            await wait_until_async(lambda: watcher.alerts >= 10, 30, what="the recent alerts")
            # garbage between two alerts: skipped and counted, the next one still arrives
            hostile = _alert(99, detail="<script>alert(1)</script>")
            await _publish(bus, [(b"ES", b"not json"), (event_key(hostile), encode(hostile))])
            await wait_until_async(lambda: watcher.alerts >= 11, 30, what="a new alert")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        return watcher

    watcher = asyncio.run(main())
    assert watcher.skipped == 1 and watcher.alerts == 11
    shown = [a["value"] for a in console.drift_alerts]
    assert shown == [99.0, *[float(n) for n in range(14, 5, -1)]]  # newest first, bounded
    assert (
        console.drift_alerts[0]["detail"] == "<script>alert(1)</script>"
    )  # data, escaped by the page
    assert not watcher.connected


@pytest.mark.s3
def test_the_recent_alerts_are_the_last_ones_though_listoffsets_answers_short(
    durable_broker: DurableBroker, make_settings: SettingsFactory
) -> None:
    # Tansu on S3 answers ListOffsets with the first batch of the newest second + 1:
    # counting back from it would show older alerts than the newest `recent`.
    settings = make_settings(KAFKA_BOOTSTRAP_SERVERS=durable_broker.address, TOPIC_PARTITIONS=1)
    bus = KafkaBus(settings)
    seen: list[float] = []

    async def main() -> tuple[int, int]:
        await bus.ensure_topics(topic_settings(bus, [DRIFT_TOPIC]))
        _, reported, end = await durable_broker.write_short_burst(
            bus.topic(DRIFT_TOPIC),
            lambda a: [encode(_alert(n)) for n in range(24 * a, 24 * a + 24)],
            4,
        )
        watcher = DriftWatcher(bus, lambda _t, a: seen.append(a.value), recent=3)
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        try:
            await wait_until_async(lambda: len(seen) >= 3, 30, what="the recent alerts")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        return reported, end

    reported, end = asyncio.run(main())
    assert reported <= end - 4, f"ListOffsets answered {reported} of {end}: not short"
    assert seen == [float(n) for n in range(end - 3, end)]


async def _console_health(client: httpx.AsyncClient) -> dict | None:
    try:
        return (await client.get("/ui/state")).json()["health"]
    except httpx.TransportError:
        return None  # the API is not up yet


async def _until_health(
    client: httpx.AsyncClient, cond: Callable[[dict], object], timeout_s: float
) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = None
    while (last := await _console_health(client)) is None or not cond(last):
        assert loop.time() < deadline, f"timed out; last console health: {last}"
        await asyncio.sleep(0.1)
    return last


def test_a_trading_process_shows_the_workers_drift_alerts_on_its_console(
    make_settings: SettingsFactory,
) -> None:
    settings: Settings = make_settings(kafka=True)
    bus = KafkaBus(settings)
    port = free_port()

    async def main() -> dict:
        stop = asyncio.Event()
        opts = TradeOptions(feed="sim", speed=600.0, api=True, http_port=port, drain_timeout_s=30)
        task = asyncio.create_task(run_trade(settings, opts, stop))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                first = await _until_health(client, lambda h: True, 60)
                assert first["drift_alerts"] == []
                alert = _alert(7, symbol="NQ", detail="win rate fell")
                await _publish(bus, [(event_key(alert), encode(alert))])
                return await _until_health(client, lambda h: h["drift_alerts"], 60)
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)

    health = asyncio.run(main())
    (shown,) = health["drift_alerts"]
    assert (shown["symbol"], shown["detail"], shown["value"]) == ("NQ", "win rate fell", 7.0)
