"""The console's feed, snapshot and routes over a real engine that traded the sim feed.

The feed is attached to the engine before the bars, as `run_trade` does; the
snapshot is cross-checked against the engine's own bookkeeping (realised PnL per
symbol, its equity list, today's statistics). Routes are called in process
(`httpx.ASGITransport`); the browser tests cover the page itself.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from infra.contracts import DriftAlert, OrderRejected
from tests.factories import T0, order_events, outcome, signal
from tests.helpers import SettingsFactory
from trader.core.engine import Engine, EngineConfig
from trader.delivery.models import ModelHolder
from trader.feeds.sim import SimFeed
from trader.io.api import create_app
from trader.io.console import ConsoleFeed
from trader.io.console.feed import MAX_DECISIONS
from trader.io.console.state import MAX_CURVE_POINTS, SwapLog
from trader.io.outbox import Outbox
from trader.runtime import Runtime

HOSTILE = "<img src=x onerror=alert(1)>&amp;\"'"


@pytest.fixture(scope="module")
def runtime(
    make_module_settings: SettingsFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    settings = make_module_settings(kafka=False)
    feed = SimFeed(("ES", "NQ"), seed=3, days=4)
    outbox = Outbox(tmp_path_factory.mktemp("outbox"))
    holder = ModelHolder()
    engine = Engine(settings, EngineConfig(run_id="ui", source="sim"), holder, sinks=[outbox.sink])
    console = ConsoleFeed().attach(engine)
    engine.run(itertools.islice(iter(feed), 4 * 23 * 60 * 2 - 60))
    try:
        yield Runtime(settings, engine, feed, holder, outbox=outbox, console=console)
    finally:
        outbox.close()


def _get(runtime: Runtime, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://trader") as client:
            return await client.get(path)

    return asyncio.run(go())


def _state(runtime: Runtime) -> dict[str, Any]:
    resp = _get(runtime, "/ui/state")
    assert resp.status_code == 200
    body: dict[str, Any] = resp.json()
    return body


def test_the_account_agrees_with_the_engines_books(runtime: Runtime) -> None:
    engine, feed = runtime.engine, runtime.console
    assert feed is not None and engine.sinks.count(feed) == 1
    assert feed.trades == len(engine.equity) > 3
    assert [p.equity_usd for p in feed.equity] == [round(v, 2) for _, v in engine.equity]
    account = _state(runtime)["account"]
    realised = round(sum(engine.realized_pnl_usd.values()), 2)
    assert account["session"]["realised_usd"] == realised
    assert account["trades"] == len(engine.equity)
    peak, worst = 0.0, 0.0
    for _, v in engine.equity:
        peak = max(peak, v)
        worst = max(worst, peak - v)
    if not account["positions"]:  # flat: no open PnL in the drawdown
        assert account["session"]["max_drawdown_usd"] == pytest.approx(worst, abs=0.01)
    today_pnl = sum(g["ALL"]["pnl_usd"] for g in engine.today.summary().values())
    assert account["today"]["realised_usd"] == pytest.approx(today_pnl, abs=0.05)
    assert len(account["session"]["points"]) == min(len(engine.equity), MAX_CURVE_POINTS)


def test_signals_models_and_health_are_in_the_snapshot(runtime: Runtime) -> None:
    state = _state(runtime)
    decisions = state["signals"]["decisions"]
    assert 0 < len(decisions) <= MAX_DECISIONS
    assert {"strategy", "taken", "chosen", "probabilities", "predicted_r", "reason"} <= set(
        decisions[0]
    )
    assert decisions[0]["at"] >= decisions[-1]["at"]  # newest first
    rows = {(r["symbol"], r["strategy"]) for r in state["signals"]["today"]}
    assert ("ES", "ALL") in rows and ("NQ", "ALL") in rows
    assert state["models"]["release"] == "none" and state["models"]["path"] == "rules"
    health = state["health"]
    assert health["bars"] == runtime.engine.bars and health["broker"]["link"] == "off"
    assert health["venue"] == {"name": "paper", "state": "connected"}


def test_hostile_strings_leave_the_server_verbatim_as_json(runtime: Runtime) -> None:
    feed = runtime.console
    assert feed is not None
    rejected = OrderRejected(
        venue="paper", symbol=HOSTILE, ts_event=T0, client_order_id="c9", reason=HOSTILE
    )
    drift = DriftAlert(
        ts_event=T0, symbol=HOSTILE, metric="r", detector="adwin", value=1.0, detail=HOSTILE
    )
    feed("orders", rejected)
    feed("drift", drift)
    state = _state(runtime)
    assert state["account"]["order_events"][0]["reason"] == HOSTILE
    assert state["account"]["order_events"][0]["symbol"] == HOSTILE
    assert state["health"]["drift_alerts"][0]["detail"] == HOSTILE
    page = _get(runtime, "/ui")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


def test_assets_are_served_and_nothing_else(runtime: Runtime) -> None:
    for name, kind in (
        ("console.js", "javascript"),
        ("console.css", "css"),
        ("favicon.svg", "svg"),
    ):
        resp = _get(runtime, f"/ui/static/{name}")
        assert resp.status_code == 200 and kind in resp.headers["content-type"]
    missing = _get(runtime, "/ui/static/console.html.bak")
    assert missing.status_code == 404 and "console.html.bak" in missing.json()["detail"]
    assert _get(runtime, "/ui/static/..%2F__init__.py").status_code == 404


def test_buffers_are_bounded_and_counterfactuals_stay_out_of_the_account() -> None:
    feed = ConsoleFeed()
    for i in range(MAX_DECISIONS + 10):
        feed("signals", signal(i))
    assert len(feed.decisions) == MAX_DECISIONS
    assert feed.decisions[0]["at"] > feed.decisions[-1]["at"]
    for event in order_events():
        feed("orders", event)
    assert [r["type"] for r in feed.fills] == ["filled"]
    assert feed.reconciliations[0]["status"] == "matched"
    cf = outcome(1).model_copy(update={"counterfactual": True})
    version = feed.version
    feed("outcomes", cf)
    assert feed.trades == 0 and not feed.equity and feed.version == version
    feed("outcomes", outcome(2, r=2.0))
    assert feed.trades == 1 and feed.realised_usd == 1050.0


def test_the_swap_log_keeps_each_new_swap_and_rejection_once() -> None:
    log = SwapLog()
    first = {"release": "r1", "at": "2026-01-01T00:00:00+00:00"}
    second = {"release": "r2", "at": "2026-01-01T00:01:00+00:00"}
    rejected = {"code": "bad_signature", "release": "r3", "at": "2026-01-01T00:02:00+00:00"}
    log.see(first, None)
    log.see(first, None)
    log.see(second, rejected)
    log.see(second, rejected)
    assert [s["release"] for s in log.swaps] == ["r2", "r1"]
    assert [r["code"] for r in log.rejections] == ["bad_signature"]


def test_the_stream_sends_the_state_then_ends_when_the_feed_closes(runtime: Runtime) -> None:
    async def go() -> bytes:
        feed = ConsoleFeed().attach(runtime.engine)
        own = Runtime(runtime.settings, runtime.engine, runtime.feed, runtime.holder, console=feed)
        asyncio.get_running_loop().call_later(1.0, feed.close)  # the trader stops
        transport = httpx.ASGITransport(app=create_app(own))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                resp = await asyncio.wait_for(client.get("/ui/events"), 20)
        finally:
            runtime.engine.sinks.remove(feed)
        assert resp.headers["content-type"].startswith("text/event-stream")
        return resp.content

    body = asyncio.run(go())
    messages = [m for m in body.split(b"\n\n") if m.startswith(b"event: state")]
    assert len(messages) == 1, body[:300]  # nothing changed while it was open
    data = orjson.loads(messages[0].split(b"data: ", 1)[1])
    assert set(data) == {"account", "signals", "models", "health", "sent_at"}
