"""The trading process end to end on the session broker: sim and kafka feeds, HTTP API."""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx
import pytest

from infra.bus import KafkaBus, topic_settings
from infra.contracts import (
    DeadLetter,
    OrderFilled,
    SignalSnapshot,
    TradeOutcome,
    decode,
    encode,
    event_key,
)
from infra.settings import Settings
from infra.stack import free_port
from tests.conftest import SettingsFactory
from trader.feeds.sim import SimFeed
from trader.live import TradeOptions, run_trade
from trader.venues.ledger import rebuild

pytestmark = pytest.mark.kafka


async def _read_topics(
    bus: KafkaBus, names: list[str], want: int, timeout_s: float = 20.0
) -> list[bytes]:
    consumer = bus.consumer([bus.topic(n) for n in names], None, from_beginning=True)
    await consumer.start()
    out: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(out) < want and time.monotonic() < deadline:
            out.extend(r.value or b"" for r in await consumer.poll(timeout_ms=500))
    finally:
        await consumer.stop()
    return out


def test_trade_sim_serves_the_api_and_drains_every_event(make_settings: SettingsFactory) -> None:
    settings: Settings = make_settings(kafka=True)
    port = free_port()
    seen: dict[str, dict] = {}

    async def main() -> None:
        stop = asyncio.Event()
        opts = TradeOptions(
            feed="sim", speed=60_000.0, api=True, http_port=port, run_id="live1", drain_timeout_s=60
        )
        task = asyncio.create_task(run_trade(settings, opts, stop))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    health = (await client.get("/healthz")).json()
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
                    continue
                if health["engine"]["events"] > 100 and health["broker"]["link"] == "up":
                    seen["healthz"] = health
                    seen["today"] = (await client.get("/verify/today")).json()
                    seen["metrics"] = {"text": (await client.get("/metrics")).text}
                    break
                await asyncio.sleep(0.1)
        stop.set()
        runtime = await asyncio.wait_for(task, 120)
        seen["runtime"] = {"appended": runtime.outbox.appended, "depth": runtime.outbox.depth}  # type: ignore[union-attr]

    asyncio.run(main())
    assert seen["healthz"]["feed"]["source"] == "sim"
    assert seen["healthz"]["models"]["path"] == "rules"
    assert seen["today"]["trading_day"] is not None and set(seen["today"]["symbols"]) <= {
        "ES",
        "NQ",
    }
    assert "tradeloop_decisions_total" in seen["metrics"]["text"]
    appended = seen["runtime"]["appended"]
    assert seen["runtime"]["depth"] == 0 and appended > 100
    bus = KafkaBus(settings)
    records = asyncio.run(_read_topics(bus, ["signals", "orders", "outcomes"], appended))
    assert len(records) == appended
    events = [decode(r) for r in records]
    snaps = [e for e in events if isinstance(e, SignalSnapshot)]
    assert snaps and all(s.run_id == "live1" and s.source == "sim" for s in snaps)
    assert len({e.event_id for e in events}) == appended
    # the orders topic replays to the trades the outcomes report: flat, same realised PnL
    fills = [e for e in events if isinstance(e, OrderFilled)]
    real = [e for e in events if isinstance(e, TradeOutcome) and not e.counterfactual]
    assert fills and real and all(f.venue == "paper" and f.run_id == "live1" for f in fills)
    ledger = rebuild(events, {"ES": 50.0, "NQ": 20.0})
    assert ledger.positions() == [] and ledger.working == {}
    for symbol in {t.symbol for t in real}:
        total = 0.0
        for t in real:
            if t.symbol == symbol:
                total += t.pnl_usd
        assert ledger.realized_pnl_usd[symbol] == total
    assert {t.entry_order_id for t in real} <= {f.client_order_id for f in fills}


def test_trade_kafka_feed_dead_letters_bad_bars(make_settings: SettingsFactory) -> None:
    settings: Settings = make_settings(kafka=True)
    bus = KafkaBus(settings)
    bars = [b.to_event("vendor") for b in itertools.islice(iter(SimFeed(("ES",), seed=8)), 2000)]

    async def produce() -> None:
        await bus.ensure_topics(topic_settings(bus, ["bars"]))
        async with bus.producer() as producer:
            await producer.send_many(
                bus.topic("bars"), [(event_key(b), encode(b)) for b in bars[:1000]]
            )
            await producer.send(bus.topic("bars"), b"{not json", b"ES")
            await producer.send(bus.topic("bars"), encode(bars[10]), b"ES")  # out of order
            await producer.send_many(
                bus.topic("bars"), [(event_key(b), encode(b)) for b in bars[1000:]]
            )

    asyncio.run(produce())
    opts = TradeOptions(
        feed="kafka", symbols=("ES",), api=False, from_beginning=True, max_bars=2000, run_id="k1"
    )
    runtime = asyncio.run(asyncio.wait_for(run_trade(settings, opts), 120))
    assert runtime.engine.bars == 2000
    assert runtime.feed.stats.skipped == 2
    assert runtime.engine.source == "live"
    dead = [decode(v, DeadLetter) for v in asyncio.run(_read_topics(bus, ["dlq"], 2))]
    assert len(dead) == 2
    assert {d.payload() for d in dead} == {b"{not json", encode(bars[10])}
    assert all(d.source_topic == bus.topic("bars") for d in dead)


def test_a_failing_bar_is_counted_and_trading_goes_on(
    make_settings: SettingsFactory, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from trader.core.engine import Engine

    original = Engine.on_bar
    calls = {"n": 0}

    def flaky(self: Engine, bar) -> None:  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 100:
            raise RuntimeError("boom")
        original(self, bar)

    monkeypatch.setattr(Engine, "on_bar", flaky)
    settings: Settings = make_settings(kafka=True)
    opts = TradeOptions(feed="sim", speed=0.0, api=False, max_bars=500, drain_timeout_s=20)
    runtime = asyncio.run(asyncio.wait_for(run_trade(settings, opts), 120))
    assert runtime.bar_errors == 1 and "boom" in (runtime.last_bar_error or "")
    assert runtime.engine.bars == 499
