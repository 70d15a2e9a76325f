"""POST /kill and /resume: bearer token in constant time, 401 without it; /healthz says why."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.settings import Settings
from trader.core.bar import MarketBar
from trader.core.engine import Engine, EngineConfig
from trader.core.killswitch import KillSwitch
from trader.delivery.models import ModelHolder
from trader.feeds.sim import SimFeed
from trader.io.api import create_app
from trader.runtime import Runtime
from trader.venues.base import BracketOrder
from trader.venues.paper import PaperVenue

TOKEN = "s3cret-token-for-tests"
T0 = int(datetime(2024, 3, 5, 15, 0, tzinfo=UTC).timestamp())


@dataclass(frozen=True)
class Session:
    """The exchange session a bar falls in (what `SessionState` asks of the features)."""

    in_rth: bool = True
    minutes_to_close: int = 300


RTH = Session()


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    settings = Settings(_env_file=None, TRADER_API_TOKEN=TOKEN)  # type: ignore[call-arg]
    holder = ModelHolder()
    engine = Engine(settings, EngineConfig(run_id="kill", source="sim"), holder)
    venue = PaperVenue(engine.instruments)
    venue.on_bar(MarketBar("ES", T0, 5000, 5001, 4999, 5000, 10.0), RTH)
    venue.submit_bracket(BracketOrder("k-entry", "ES", "buy", 1, 4.0, 8.0))
    venue.on_bar(MarketBar("ES", T0 + 60, 5000, 5002, 4999, 5001, 10.0), RTH)
    rt = Runtime(settings, engine, SimFeed(("ES",), seed=1, days=1), holder)
    rt.venue = venue
    rt.killswitch = KillSwitch(tmp_path / "killswitch.json", engine.risk)
    return rt


def _call(rt: Runtime, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://trader") as client:
            return await client.request(method, path, **kw)

    return asyncio.run(go())


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_kill_needs_the_token(runtime: Runtime) -> None:
    assert _call(runtime, "POST", "/kill").status_code == 401
    wrong = _call(runtime, "POST", "/kill", headers=_auth(TOKEN + "x"))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert _call(runtime, "POST", "/kill", headers={"Authorization": TOKEN}).status_code == 401
    assert not runtime.killswitch.halted  # type: ignore[union-attr]
    assert runtime.venue is not None and len(runtime.venue.positions()) == 1
    assert TOKEN not in wrong.text


def test_kill_flattens_halts_and_healthz_says_why_until_resume(runtime: Runtime) -> None:
    before = _call(runtime, "GET", "/healthz").json()
    assert before["entries"] == {"allowed": True, "refused_because": None}
    assert before["kill_switch"]["halted"] is False and before["venue"]["name"] == "paper"
    r = _call(
        runtime, "POST", "/kill", headers=_auth(TOKEN), json={"by": "ops", "reason": "fat finger"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["halted"] and body["by"] == "ops" and body["reason"] == "fat finger"
    assert body["last_actions"]["flattened"] == 1 and body["last_actions"]["cancelled"] == 2
    assert runtime.venue is not None and runtime.venue.positions() == []
    health = _call(runtime, "GET", "/healthz").json()
    assert health["status"] == "halted" and health["entries"]["allowed"] is False
    assert "kill switch engaged by ops" in health["entries"]["refused_because"]
    assert "fat finger" in health["kill_switch"]["entries"]
    assert runtime.engine.risk.check("ES", 1, 10.0, T0)[1] == "kill_switch"
    assert _call(runtime, "POST", "/resume").status_code == 401
    r = _call(runtime, "POST", "/resume", headers=_auth(TOKEN), json={"by": "ops"})
    assert r.status_code == 200 and r.json()["halted"] is False
    assert r.json()["entries_now"]["allowed"] is True
    assert _call(runtime, "GET", "/healthz").json()["entries"]["allowed"] is True


def test_without_a_configured_token_every_kill_is_refused(runtime: Runtime) -> None:
    runtime.settings = Settings(_env_file=None)  # type: ignore[call-arg]
    r = _call(runtime, "POST", "/kill", headers=_auth(""))
    assert r.status_code == 401 and "TRADER_API_TOKEN is not set" in r.json()["detail"]


def test_resume_reconciles_again(tmp_path: Path) -> None:
    from trader.recovery import Recovery

    settings = Settings(_env_file=None, TRADER_API_TOKEN=TOKEN)  # type: ignore[call-arg]
    holder = ModelHolder()
    engine = Engine(settings, EngineConfig(run_id="resume", source="sim"), holder)
    recovery = Recovery(settings, engine, state_dir=tmp_path)
    rt = Runtime(settings, engine, SimFeed(("ES",), seed=1, days=1), holder)
    rt.reconciliation = recovery.start()
    rt.venue, rt.killswitch, rt.recovery = engine.venue, recovery.killswitch, recovery
    assert _call(rt, "POST", "/kill", headers=_auth(TOKEN)).status_code == 200
    assert _call(rt, "GET", "/healthz").json()["reconciliation"]["trigger"] == "start"
    assert _call(rt, "POST", "/resume", headers=_auth(TOKEN)).status_code == 200
    health = _call(rt, "GET", "/healthz").json()
    assert health["reconciliation"]["trigger"] == "resume" and health["reconciliation"]["clean"]
    assert health["entries"]["allowed"] is True
    recovery.close()


def test_the_client_names_what_went_wrong() -> None:
    from pydantic import SecretStr

    from infra.stack import free_port
    from trader.io.api_client import TraderApiError, post_control

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(TraderApiError, match=f"no trader answers at {url}/kill"):
        post_control(url, "kill", SecretStr(TOKEN), timeout_s=2)
    with pytest.raises(TraderApiError, match="TRADER_API_TOKEN is not set here"):
        post_control(url, "resume", SecretStr(""))
    with pytest.raises(ValueError, match="'kill' or 'resume'"):
        post_control(url, "explode", SecretStr(TOKEN))
