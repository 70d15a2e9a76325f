"""`tradeloop trade` while its dependencies fail, through the fault proxy.

Kafka blackholed: the trader trades on, spools, and drains in order when the broker
answers again. S3 blackholed during a hot swap: the download times out (the S3
timeouts are settings), the release is rejected as transient and the current models
keep serving; when S3 returns the release is swapped in. In both, decision lateness
is measured from the events themselves (`ts_init` against the feed's pace): the
largest jump between two decisions stays far below the outage.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from infra.contracts import SignalSnapshot, decode
from infra.settings import Settings
from infra.stack import free_port
from tests.helpers import SettingsFactory, s3_bucket_for, unique
from tests.hotswap_support import Publisher, release_bytes
from tests.kit.faults import ProxyKit, decision_stall_s, read_topics
from trader.live import TradeOptions, run_trade

SPEED = 20_000.0  # a sim day in about 4 s
#: Generous: a decision loop that waited on a dependency would stall for seconds.
MAX_STALL_S = 1.0


async def _health(
    client: httpx.AsyncClient, cond: Callable[[dict[str, Any]], bool], timeout_s: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            last = (await client.get("/healthz")).json()
            if cond(last):
                return last
        except httpx.HTTPError:
            pass  # the API is not up yet
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last /healthz: {last}")


def _opts(port: int) -> TradeOptions:
    return TradeOptions(
        feed="sim", symbols=("ES", "NQ"), speed=SPEED, api=True, http_port=port, drain_timeout_s=60
    )


def test_kafka_blackholed_the_trader_trades_on_spools_and_drains_in_order(
    make_settings: SettingsFactory, fault_proxies: ProxyKit, tmp_path: Path
) -> None:
    broker = fault_proxies.broker(tmp_path)
    settings: Settings = make_settings(kafka=False, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap)
    port = free_port()
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_trade(settings, _opts(port), stop))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            await _health(
                client,
                lambda h: h["engine"]["events"] > 20 and h["broker"]["link"] == "up",
                60,
                "trading with the broker up",
            )
            broker.proxy.set("blackhole")
            out_at = time.monotonic()
            h = await _health(client, lambda h: True, 5, "health")
            events_at = h["engine"]["events"]
            h = await _health(
                client,
                lambda h: (
                    h["engine"]["events"] > events_at + 60
                    and h["outbox"]["depth"] >= 30
                    and time.monotonic() - out_at >= 3.0  # an outage longer than a stall bound
                ),
                60,
                "trading on and spooling while Kafka is silent",
            )
            seen["depth_during"] = h["outbox"]["depth"]
            broker.proxy.heal()
            seen["outage_s"] = time.monotonic() - out_at
            await _health(
                client,
                lambda h: h["outbox"]["depth"] == 0 and h["broker"]["link"] == "up",
                90,
                "the spool drained",
            )
        stop.set()
        runtime = await asyncio.wait_for(task, 120)
        assert runtime.outbox is not None
        seen["appended"] = runtime.outbox.appended
        names = [settings.topic(t) for t in ("signals", "orders", "outcomes")]
        seen["records"] = await read_topics(broker.bootstrap, names)

    asyncio.run(scenario())
    assert seen["depth_during"] >= 30 and seen["outage_s"] >= 3.0
    records = seen["records"]
    events: list[Any] = [decode(r.value) for r in records]
    counts = Counter(e.event_id for e in events)
    assert len(counts) == seen["appended"], "every spooled event reached Kafka"
    dupes = sum(n - 1 for n in counts.values())
    assert dupes == 0, f"{dupes} events sent twice"
    # drained in spool order: per partition, the events were created in offset order
    by_part: dict[tuple[str, int], list[Any]] = {}
    for r, e in zip(records, events, strict=True):
        by_part.setdefault((r.topic, r.partition), []).append(e.ts_init)
    for part, inits in by_part.items():
        assert inits == sorted(inits), f"{part} is out of spool order"
    signals = [e for e in events if isinstance(e, SignalSnapshot)]
    assert signals
    stall = decision_stall_s(signals, SPEED)
    assert stall < MAX_STALL_S, f"the decision loop stalled for {stall:.2f}s"


def test_s3_blackholed_during_a_hot_swap_keeps_serving_then_swaps(
    make_settings: SettingsFactory, fault_proxies: ProxyKit, s3_server: Any
) -> None:
    s3 = fault_proxies.to(s3_server.address, name="s3")
    bucket = s3_bucket_for(s3_server.address, unique("hs-"))
    settings: Settings = make_settings(
        kafka=True,
        S3_ENDPOINT_URL=s3.url,
        S3_BUCKET=bucket,
        LAKE_URI=f"s3://{bucket}/lake",
        S3_CONNECT_TIMEOUT_MS=500,
        S3_READ_TIMEOUT_MS=1000,
        S3_MAX_ATTEMPTS=1,
        MODEL_POLL_SEC=1,
    )
    direct = settings.model_copy(update={"s3_endpoint_url": s3_server.address})
    pub = Publisher(direct)
    port = free_port()
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        await pub.to_topic(release_bytes(direct, 1))
        stop = asyncio.Event()
        task = asyncio.create_task(run_trade(settings, _opts(port), stop))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            await _health(
                client,
                lambda h: h["models"]["release"] == "r1" and h["engine"]["events"] > 20,
                90,
                "serving r1",
            )
            s3.set("blackhole")
            r2 = release_bytes(direct, 2)
            await pub.to_topic(r2)
            pub.to_latest(r2)
            h = await _health(
                client,
                lambda h: (
                    h["rejections"].get("missing_artifact", 0) >= 1
                    and h["models"]["hot_swap"]["loop_errors"].get("latest_json", 0) >= 2
                ),
                60,
                "the download and the polls of latest.json timing out",
            )
            seen["during"] = h
            s3.heal()
            swapped = await _health(
                client, lambda h: h["models"]["release"] == "r2", 60, "r2 swapped in"
            )
            at_swap = swapped["engine"]["events"]
            seen["after"] = await _health(
                client,
                lambda h: h["engine"]["events"] > at_swap + 20,
                60,
                "decisions on r2",
            )
        stop.set()
        await asyncio.wait_for(task, 60)
        records = await read_topics(settings.bootstrap_servers, [settings.topic("signals")])
        seen["signals"] = [decode(r.value, SignalSnapshot) for r in records]

    asyncio.run(scenario())
    during = seen["during"]
    assert during["models"]["release"] == "r1"  # the current models kept serving
    rejected = during["last_rejected_release"]
    assert rejected["release"] == "r2" and rejected["code"] == "missing_artifact"
    assert "Timeout" in rejected["detail"], rejected["detail"]
    assert seen["after"]["models"]["hot_swap"]["swaps"] == 2
    signals = seen["signals"]
    versions = {s.model_versions["meta"] for s in signals}
    assert versions == {"v1", "v2"}
    stall = decision_stall_s(signals, SPEED)
    assert stall < MAX_STALL_S, f"the decision loop stalled for {stall:.2f}s"
