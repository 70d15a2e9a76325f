"""The HTTP API against a runtime that traded a few simulated days."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import pytest

from infra.settings import Settings
from trader.core.engine import Engine, EngineConfig
from trader.delivery.models import ModelHolder
from trader.feeds.sim import SimFeed
from trader.io.api import create_app
from trader.io.outbox import Outbox
from trader.runtime import Runtime

METRICS = (
    "tradeloop_decisions_total",
    "tradeloop_decision_latency_seconds_bucket",
    "tradeloop_outbox_depth",
    "tradeloop_events_out_total",
    "tradeloop_model_release_info",
    "tradeloop_model_age_seconds",
    "tradeloop_model_swaps_total",
    "tradeloop_model_rejections_total",
    "tradeloop_pnl_usd",
)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    feed = SimFeed(("ES", "NQ"), seed=2, days=3)
    outbox = Outbox(tmp_path_factory.mktemp("outbox"))
    holder = ModelHolder()
    engine = Engine(settings, EngineConfig(run_id="api", source="sim"), holder, sinks=[outbox.sink])
    engine.run(itertools.islice(iter(feed), 3 * 23 * 60 * 2 - 60))  # stop before the last close
    rt = Runtime(settings, engine, feed, holder, outbox=outbox)
    rt.model_rejected("2024.01.01-9", "bad_signature", "signature does not verify")
    return rt


def _get(runtime: Runtime, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://trader") as client:
            return await client.get(path)

    return asyncio.run(go())


def test_healthz_reports_feed_broker_outbox_models_and_rejections(runtime: Runtime) -> None:
    body = _get(runtime, "/healthz").json()
    assert body["feed"]["name"].startswith("sim") and body["feed"]["bars"] > 0
    assert body["broker"] == {"link": "off"}
    assert body["outbox"]["depth"] == runtime.outbox.depth > 0  # type: ignore[union-attr]
    assert body["models"]["path"] == "rules" and body["models"]["release"] == "none"
    assert body["last_rejected_release"]["release"] == "2024.01.01-9"
    assert body["rejections"] == {"bad_signature": 1}
    assert body["engine"]["bars"] == runtime.engine.bars


def test_canary_is_reported_off_with_honest_counts(runtime: Runtime) -> None:
    body = _get(runtime, "/healthz/canary").json()
    assert body["mode"] == "off" and body["serving"] == "champion" and body["challenger"] is None
    assert body["share"] == 0.0 and body["decisions"]["challenger"] == 0
    assert body["decisions"]["champion"] == sum(
        g.signals for (_, s), g in runtime.engine.stats.groups.items() if s == "ALL"
    )


def test_verify_today_has_every_statistic_per_symbol_and_strategy(runtime: Runtime) -> None:
    body = _get(runtime, "/verify/today").json()
    assert body["trading_day"] is not None
    assert set(body["symbols"]) == {"ES", "NQ"}
    for groups in body["symbols"].values():
        assert "ALL" in groups
        for stats in groups.values():
            assert {
                "signals",
                "trades",
                "win_rate",
                "avg_r",
                "pnl_usd",
                "sharpe",
                "max_drawdown_usd",
            } <= set(stats)
    total = sum(g["ALL"]["signals"] for g in body["symbols"].values())
    assert total > 0


def test_build_and_metrics(runtime: Runtime) -> None:
    build = _get(runtime, "/build").json()
    assert build["mode"] == "paper" and build["version"] and len(build["git_sha"]) >= 7
    resp = _get(runtime, "/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    for name in METRICS:
        assert name in text, name
    assert 'tradeloop_decisions_total{path="rules"' in text
    assert 'tradeloop_model_rejections_total{reason="bad_signature"}' in text
    depth = next(line for line in text.splitlines() if line.startswith("tradeloop_outbox_depth "))
    assert float(depth.split()[1]) == runtime.outbox.depth  # type: ignore[union-attr]


def test_unknown_path_is_404(runtime: Runtime) -> None:
    assert _get(runtime, "/nope").status_code == 404
