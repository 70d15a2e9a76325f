"""`tradeloop trade` (run_trade) hot-swapping while it trades, against Tansu and moto S3.

A release is on the `models` topic before the trader starts; a second one is published
while it trades. Checked through the trader's own interfaces: `/healthz`,
`/healthz/canary`, `/metrics`, and the `signals` topic the outbox drained to.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from infra.bus import KafkaBus
from infra.contracts import SignalSnapshot, decode
from infra.offsets import read_topics_to_end
from infra.settings import Settings
from infra.stack import free_port
from tests.helpers import s3_bucket_for, unique
from tests.hotswap_support import Publisher, release_bytes
from trader.live import TradeOptions, run_trade

pytestmark = [pytest.mark.kafka, pytest.mark.s3]


async def _get(client: httpx.AsyncClient, path: str) -> Any:
    resp = await client.get(path)
    resp.raise_for_status()
    return resp.json() if path != "/metrics" else resp.text


async def _until_health(
    client: httpx.AsyncClient, cond: Callable[[dict[str, Any]], bool], timeout_s: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            last = await _get(client, "/healthz")
            if cond(last):
                return last
        except httpx.HTTPError:
            pass  # the API is not up yet
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out; last /healthz: {last.get('models')}")


async def _signals(settings: Settings) -> list[SignalSnapshot]:
    """Read the whole signals topic (assigned partitions, no group)."""
    bus = KafkaBus(settings)
    out: list[SignalSnapshot] = []
    ends = await read_topics_to_end(
        bus,
        [bus.topic("signals")],
        lambda msgs: out.extend(decode(m.value or b"", SignalSnapshot) for m in msgs),
    )
    assert ends, f"{bus.topic('signals')} does not exist"
    out.sort(key=lambda s: s.ts_init)  # the order they were decided in
    return out


def _settings(make_settings: Callable[..., Settings], s3_server: Any, **env: Any) -> Settings:
    bucket = s3_bucket_for(s3_server.address, unique("ht"))
    return make_settings(kafka=True, s3=True, S3_BUCKET=bucket, **env)


def _trade(settings: Settings, port: int) -> TradeOptions:
    return TradeOptions(
        feed="sim",
        symbols=("ES", "NQ"),
        speed=20_000.0,
        api=True,
        http_port=port,
        drain_timeout_s=20,
    )


def test_trade_starts_on_the_topic_release_and_hot_swaps_while_trading(
    make_settings: Callable[..., Settings], s3_server: Any
) -> None:
    settings = _settings(make_settings, s3_server)
    pub = Publisher(settings)
    port = free_port()

    async def scenario() -> None:
        await pub.to_topic(release_bytes(settings, 1))
        stop = asyncio.Event()
        task = asyncio.create_task(run_trade(settings, _trade(settings, port), stop))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            h = await _until_health(
                client, lambda h: h["models"]["release"] == "r1" and h["engine"]["events"] > 20
            )
            assert h["models"]["hot_swap"]["sequence"] == 1
            await pub.to_topic(release_bytes(settings, 2))
            h = await _until_health(client, lambda h: h["models"]["release"] == "r2")
            events_at_swap = h["engine"]["events"]
            h = await _until_health(client, lambda h: h["engine"]["events"] > events_at_swap + 20)
            hot = h["models"]["hot_swap"]
            assert hot["swaps"] == 2 and hot["last_swap"]["release"] == "r2"
            assert h["rejections"] == {} and h["last_rejected_release"] is None
            canary = await _get(client, "/healthz/canary")
            assert canary["mode"] == "off" and canary["champion"]["release"] == "r2"
            text = await _get(client, "/metrics")
            assert 'tradeloop_model_release_info{release="r2"} 1.0' in text
            assert "tradeloop_model_swaps_total" in text
        stop.set()
        runtime = await asyncio.wait_for(task, 60)
        assert runtime.swapper is not None and runtime.swapper.swaps == 2

        signals = await _signals(settings)
        assert signals
        versions = [s.model_versions for s in signals]
        v1 = {"meta": "v1", "exec": "v1", "sizer": "v1"}
        v2 = {"meta": "v2", "exec": "v2", "sizer": "v2"}
        assert all(v in (v1, v2) for v in versions)
        first_v2 = versions.index(v2)
        # one swap between two decisions: r1 decides everything before, r2 everything after
        assert all(v == v1 for v in versions[:first_v2]) and first_v2 > 0
        assert all(v == v2 for v in versions[first_v2:])
        assert all(s.decision.variant == "champion" for s in signals)

    asyncio.run(scenario())


def test_trade_in_canary_mode_routes_the_new_release_on_a_share(
    make_settings: Callable[..., Settings], s3_server: Any
) -> None:
    settings = _settings(
        make_settings,
        s3_server,
        CANARY_MODE="canary",
        CANARY_SHARE=0.5,
        CANARY_MIN_DECISIONS=100_000,
    )
    pub = Publisher(settings)
    port = free_port()

    async def scenario() -> None:
        await pub.to_topic(release_bytes(settings, 1))
        stop = asyncio.Event()
        task = asyncio.create_task(run_trade(settings, _trade(settings, port), stop))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            await _until_health(client, lambda h: h["models"]["release"] == "r1")
            await pub.to_topic(release_bytes(settings, 2))
            await _until_health(client, lambda h: h["models"]["hot_swap"]["challenger"] == "r2")
            deadline = time.monotonic() + 60
            canary: dict[str, Any] = {}
            while time.monotonic() < deadline:
                canary = await _get(client, "/healthz/canary")
                counts = canary.get("counts") or {}
                if (counts.get("challenger") or {}).get("decisions", 0) >= 5:
                    break
                await asyncio.sleep(0.1)
            assert canary["mode"] == "canary"
            assert canary["champion"]["release"] == "r1"
            assert canary["challenger"]["release"] == "r2"
            assert canary["shares"] == {"champion": 0.5, "challenger": 0.5}
            assert canary["counts"]["challenger"]["decisions"] >= 5
            assert canary["counts"]["champion"]["decisions"] >= 1
            assert canary["comparison"]["metric"] == "mean R per resolved decision"
        stop.set()
        await asyncio.wait_for(task, 60)
        signals = await _signals(settings)
        variants = {s.decision.variant for s in signals}
        assert variants == {"champion", "challenger"}
        for s in signals:
            want = "v2" if s.decision.variant == "challenger" else "v1"
            assert s.model_versions["meta"] == want

    asyncio.run(scenario())
