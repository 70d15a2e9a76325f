"""The HTTP API against a runtime that traded a few simulated days.

Its hot swap followed `latest.json` on the object store, where a release signed with
the wrong key was published: `/healthz` and `/metrics` show that rejection as the
production path recorded it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import httpx
import pytest

from infra.signing import Keyring
from tests.helpers import SettingsFactory
from tests.hotswap_support import Publisher, release_bytes
from trader import metrics
from trader.core.engine import Engine, EngineConfig
from trader.delivery.hotswap import HotSwapper
from trader.delivery.models import ModelHolder
from trader.delivery.release_helper import ReleaseHelper
from trader.feeds.sim import SimFeed
from trader.io.api import create_app
from trader.io.outbox import Outbox
from trader.runtime import Runtime

FORGED_RELEASE = "2024.01.01-9"

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


def _bad_signatures() -> float:
    """Return `tradeloop_model_rejections_total{reason="bad_signature"}` now."""
    value = metrics.REGISTRY.get_sample_value(
        "tradeloop_model_rejections_total", {"reason": "bad_signature"}
    )
    return value or 0.0


@pytest.fixture(scope="module")
def bad_signatures_before() -> float:
    """The rejection counter before this module's swapper saw the forged release."""
    return _bad_signatures()


async def _follow_until_ready(swapper: HotSwapper) -> None:
    """Run the swapper as `tradeloop trade` does until its start-up read is done."""
    stop = asyncio.Event()
    task = asyncio.create_task(swapper.run(stop))
    try:
        await asyncio.wait_for(swapper.ready.wait(), 60)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


@pytest.fixture(scope="module")
def runtime(
    make_module_settings: SettingsFactory,
    tmp_path_factory: pytest.TempPathFactory,
    bad_signatures_before: float,
) -> Iterator[Runtime]:
    settings = make_module_settings(kafka=False, s3=True)
    feed = SimFeed(("ES", "NQ"), seed=2, days=3)
    outbox = Outbox(tmp_path_factory.mktemp("outbox"))
    holder = ModelHolder()
    engine = Engine(settings, EngineConfig(run_id="api", source="sim"), holder, sinks=[outbox.sink])
    engine.run(itertools.islice(iter(feed), 3 * 23 * 60 * 2 - 60))  # stop before the last close
    # a release under the trader's key id, signed with another secret
    forger = Keyring({settings.manifest_key_id: b"not-the-release-key"}, settings.manifest_key_id)
    raw = release_bytes(settings, 9, keyring=forger, release=FORGED_RELEASE)
    Publisher(settings).to_latest(raw)
    helper = ReleaseHelper()
    swapper = HotSwapper(settings, holder, use_kafka=False, poll_sec=3600, helper=helper)
    try:
        asyncio.run(_follow_until_ready(swapper))
        yield Runtime(settings, engine, feed, holder, outbox=outbox, swapper=swapper)
    finally:
        helper.close()
        outbox.close()


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
    assert body["last_rejected_release"]["release"] == FORGED_RELEASE
    assert body["rejections"] == {"bad_signature": 1}
    assert body["engine"]["bars"] == runtime.engine.bars
    rejected = body["last_rejected_release"]
    assert rejected["code"] == "bad_signature" and rejected["sequence"] == 9
    assert rejected["source"] == "latest.json" and rejected["verified"] is False
    hot_swap = body["models"]["hot_swap"]
    assert hot_swap["swaps"] == 0 and hot_swap["release"] == "none"
    assert hot_swap["rejections"] == {"bad_signature": 1}
    assert hot_swap["last_rejection"] == rejected


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


def test_build_and_metrics(runtime: Runtime, bad_signatures_before: float) -> None:
    build = _get(runtime, "/build").json()
    assert build["mode"] == "paper" and build["version"] and len(build["git_sha"]) >= 7
    resp = _get(runtime, "/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    for name in METRICS:
        assert name in text, name
    assert 'tradeloop_decisions_total{path="rules"' in text
    assert 'tradeloop_model_rejections_total{reason="bad_signature"}' in text
    line = next(
        line
        for line in text.splitlines()
        if line.startswith('tradeloop_model_rejections_total{reason="bad_signature"}')
    )
    assert float(line.split()[1]) == bad_signatures_before + 1  # this runtime's rejection
    depth = next(line for line in text.splitlines() if line.startswith("tradeloop_outbox_depth "))
    assert float(depth.split()[1]) == runtime.outbox.depth  # type: ignore[union-attr]


def test_unknown_path_is_404(runtime: Runtime) -> None:
    assert _get(runtime, "/nope").status_code == 404
