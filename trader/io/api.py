"""The trader's HTTP API (FastAPI): health, canary, today's verification, build, metrics.

`POST /kill` and `POST /resume` engage and lift the kill switch. Every
state-changing request (any method but GET, HEAD and OPTIONS, on any route) needs
`Authorization: Bearer $TRADER_API_TOKEN` (compared in constant time; 401 without
it, and always 401 while no token is configured). `/docs`, `/redoc` and
`/openapi.json` are off unless `TRADER_API_DOCS=1`; `/healthz` shows no file paths
and no exception texts (`trader.io.public`). Every handler that touches the
engine is `async`, so it runs on the trading loop between bars, never beside one.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from trader import metrics
from trader.io.console import console_router
from trader.io.public import error_code, public
from trader.runtime import Runtime, build_info

__all__ = ["KillRequest", "create_app"]


class KillRequest(BaseModel):
    """Who asks and why (both optional)."""

    by: str = Field(default="api", max_length=100)
    reason: str = Field(default="", max_length=500)


def _authorize(runtime: Runtime, authorization: str | None) -> None:
    """Raise 401 unless the bearer token matches the configured one (constant time)."""
    expected = runtime.settings.trader_api_token.get_secret_value()
    if not expected:
        raise HTTPException(
            401,
            "TRADER_API_TOKEN is not set on the trader: the kill switch cannot be driven over HTTP",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _venue(runtime: Runtime) -> dict[str, Any] | None:
    """Return the venue's connection, positions and working orders."""
    venue = runtime.venue
    if venue is None:
        return None
    return {
        "name": venue.name,
        "state": str(venue.state),
        "positions": [
            {"symbol": p.symbol, "quantity": p.quantity, "avg_price": p.avg_price}
            for p in venue.positions()
        ],
        "working_orders": [
            {
                "client_order_id": w.client_order_id,
                "symbol": w.symbol,
                "role": w.role,
                "side": w.side,
                "quantity": w.quantity,
                "stop_price": w.stop_price,
                "limit_price": w.limit_price,
            }
            for w in venue.working_orders()
        ],
    }


def create_app(runtime: Runtime) -> FastAPI:
    """Return the API over a running trader."""
    docs = runtime.settings.trader_api_docs
    app = FastAPI(
        title="tradeloop trader",
        version=build_info(runtime.mode)["version"],
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )

    @app.middleware("http")
    async def _require_token(request: Request, call_next: Any) -> Any:
        """Refuse every state-changing request without the bearer token, whatever the route."""
        if request.method not in SAFE_METHODS:
            try:
                _authorize(runtime, request.headers.get("authorization"))
            except HTTPException as exc:
                return JSONResponse(
                    {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
                )
        return await call_next(request)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Feed, broker link, outbox, models, rejections, engine, kill switch and entries."""
        outbox: dict[str, Any] = {"enabled": runtime.outbox is not None}
        if runtime.outbox is not None:
            ob = runtime.outbox
            outbox.update(
                depth=ob.depth,
                appended=ob.appended,
                next_seq=ob.next_seq,
                cursor=ob.cursor,
                held=ob.held,
                write_failing=bool(ob.write_error),
                write_error=ob.write_error.split(":", 1)[0],  # the errno name, e.g. ENOSPC
                write_failures=ob.write_failures,
            )
        broker = runtime.drainer.status() if runtime.drainer is not None else {"link": "off"}
        link_ok = broker["link"] in ("up", "off")
        entries = runtime.entries()
        status = "ok" if link_ok else "degraded"
        if not entries["allowed"]:
            status = "halted"
        return public(  # no file paths, no exception texts
            {
                "status": status,
                "entries": entries,
                "kill_switch": runtime.killswitch.status() if runtime.killswitch else None,
                "reconciliation": (
                    runtime.reconciliation.status() if runtime.reconciliation is not None else None
                ),
                "venue": _venue(runtime),
                "mode": runtime.mode,
                "uptime_s": round(datetime.now(UTC).timestamp() - runtime.started_at, 1),
                "feed": runtime.feed.describe(),
                "broker": broker,
                "outbox": outbox,
                "models": runtime.models_status(),
                # hot swap: rejections come from the swapper when one follows releases
                "last_rejected_release": (
                    runtime.swapper.last_rejection if runtime.swapper else runtime.last_rejected
                ),
                "rejections": dict(
                    runtime.swapper.rejections if runtime.swapper else runtime.rejections
                ),
                "engine": runtime.engine.status(),
                "bar_errors": {
                    "count": runtime.bar_errors,
                    "last": error_code(runtime.last_bar_error),
                },
            }
        )

    @app.post("/kill")
    async def kill(
        request: Annotated[KillRequest | None, Body()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        """Cancel every working order, flatten every position, halt entries until resumed."""
        _authorize(runtime, authorization)
        ks = runtime.killswitch
        if ks is None:
            raise HTTPException(503, "this trader runs without a kill switch")
        req = request or KillRequest()
        try:
            ks.trigger(runtime.venue, req.by, req.reason or "POST /kill")
        except Exception as exc:  # the halt is persisted; say what the venue did not do
            raise HTTPException(
                502, f"halted, but the venue failed: {type(exc).__name__}: {exc}"
            ) from None
        return ks.status()

    @app.post("/resume")
    async def resume(
        request: Annotated[KillRequest | None, Body()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        """Lift the kill switch and reconcile again (other holds, such as a prop-firm breach, stay)."""
        _authorize(runtime, authorization)
        ks = runtime.killswitch
        if ks is None:
            raise HTTPException(503, "this trader runs without a kill switch")
        req = request or KillRequest()
        ks.resume(req.by, req.reason or "POST /resume")
        if runtime.recovery is not None:  # the operator may have cleared a difference at the venue
            runtime.reconciliation = runtime.recovery.reconcile("resume")
        return {**ks.status(), "entries_now": runtime.entries()}

    @app.get("/healthz/canary")
    def canary() -> dict[str, Any]:
        """Champion, challenger, mode, shares, counts and the running comparison."""
        if runtime.router is not None:  # trader/delivery/canary.py: CANARY_MODE is shadow or canary
            return runtime.router.status()
        current = runtime.holder.current
        decisions = sum(
            g.signals for (_, s), g in runtime.engine.stats.groups.items() if s == "ALL"
        )
        return {
            "mode": "off",
            "configured_mode": runtime.settings.canary_mode,
            "serving": "champion",
            "champion": {"release": current.release, "versions": dict(current.versions)},
            "challenger": None,
            "share": 0.0,
            "decisions": {"champion": decisions, "challenger": 0, "shadow": 0},
        }

    @app.get("/verify/today")
    def verify_today() -> dict[str, Any]:
        """Per symbol and strategy today: signals, trades, win rate, avg R, PnL, Sharpe, drawdown."""
        engine = runtime.engine
        day = engine.risk.day
        return {
            "trading_day": datetime.fromtimestamp(day * 86400, UTC).date().isoformat()
            if day >= 0
            else None,
            "symbols": engine.today.summary(),
        }

    @app.get("/build")
    def build() -> dict[str, str]:
        """Version, git sha and mode."""
        return build_info(runtime.mode)

    @app.get("/metrics")
    def prometheus() -> Response:
        """Prometheus text exposition."""
        runtime.refresh_gauges()
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(console_router(runtime))  # the operator console at /ui
    return app
