"""The trader API's surface: no schema pages by default, every state-changing request
needs the bearer token (any route, even one added later), and /healthz shows neither
file paths nor exception texts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from infra.settings import Settings
from trader.core.engine import Engine, EngineConfig
from trader.core.killswitch import KillSwitch
from trader.delivery.models import ModelHolder
from trader.feeds.sim import SimFeed
from trader.io.api import SAFE_METHODS, create_app
from trader.io.public import public
from trader.runtime import Runtime

TOKEN = "api-token-under-test"


def _runtime(tmp_path: Path, **env: Any) -> Runtime:
    settings = Settings(_env_file=None, **{"TRADER_API_TOKEN": TOKEN, **env})  # type: ignore[call-arg]
    holder = ModelHolder()
    engine = Engine(settings, EngineConfig(run_id="api-sec", source="sim"), holder)
    rt = Runtime(settings, engine, SimFeed(("ES",), seed=1, days=1), holder)
    rt.killswitch = KillSwitch(tmp_path / "state" / "killswitch.json", engine.risk)
    return rt


def _call(rt: Runtime, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://trader") as client:
            return await client.request(method, path, **kw)

    return asyncio.run(go())


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_schema_pages_are_off_by_default_and_on_when_asked(tmp_path: Path, path: str) -> None:
    assert _call(_runtime(tmp_path), "GET", path).status_code == 404
    assert _call(_runtime(tmp_path, TRADER_API_DOCS="1"), "GET", path).status_code == 200


def test_every_state_changing_route_needs_the_token(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    app = create_app(rt)
    changing = [
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods
        if method not in SAFE_METHODS
    ]
    assert ("POST", "/kill") in changing and ("POST", "/resume") in changing
    # routes that do not exist (yet) are refused before routing, whatever the method
    probes = [*changing, ("POST", "/healthz"), ("PUT", "/anything"), ("DELETE", "/ui")]
    for method, path in probes:
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN}):
            resp = _call(rt, method, path, headers=headers)
            assert resp.status_code == 401, (method, path, headers, resp.text)
            assert resp.headers["www-authenticate"] == "Bearer" and TOKEN not in resp.text
    assert rt.killswitch is not None and not rt.killswitch.halted
    ok = _call(rt, "POST", "/kill", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and rt.killswitch.halted
    # without a configured token nothing changes state
    unset = _runtime(tmp_path / "unset", TRADER_API_TOKEN="")
    assert _call(unset, "POST", "/kill", headers={"Authorization": "Bearer "}).status_code == 401
    # reads stay open
    assert _call(rt, "GET", "/healthz").status_code == 200


def test_healthz_shows_no_paths_and_no_exception_texts(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    rt.bar_errors = 1
    rt.last_bar_error = "MarketBar('ES'): ValueError: cannot read /srv/tradeloop/secret.csv"
    rt.last_rejected = {
        "code": "bad_uri",
        "detail": "artifact file:///etc/passwd lies outside models/",
        "at": "2024-03-05T15:00:00+00:00",
    }
    body = _call(rt, "GET", "/healthz").json()
    text = json.dumps(body)
    assert str(tmp_path) not in text and "/srv/" not in text and "/etc/passwd" not in text
    assert "cannot read" not in text and "lies outside" not in text
    assert body["bar_errors"] == {"count": 1, "last": "ValueError"}
    assert body["last_rejected_release"]["code"] == "bad_uri"
    assert body["last_rejected_release"]["detail"] == "error"
    assert "file" not in (body["kill_switch"] or {})
    assert body["status"] in ("ok", "degraded", "halted")


def test_public_keeps_urls_and_codes_and_drops_locations() -> None:
    doc = {
        "topic": "tradeloop.models",
        "latest_json": "models/latest.json",
        "endpoint": "http://minio:9000/bucket",
        "dir": "/var/lib/tradeloop/outbox",
        "note": "wrote /var/lib/tradeloop/outbox/seg-1 at 12:00",
        "last_error": "KafkaConnectionError: Unable to bootstrap from 10.0.0.5:9092",
        "nested": [{"error": "boom"}, {"error": None}],
    }
    assert public(doc) == {
        "topic": "tradeloop.models",
        "latest_json": "models/latest.json",
        "endpoint": "http://minio:9000/bucket",
        "note": "wrote <path> at 12:00",
        "last_error": "KafkaConnectionError",
        "nested": [{"error": "error"}, {"error": None}],
    }
