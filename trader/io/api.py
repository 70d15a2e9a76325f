"""The trader's HTTP API (FastAPI): health, canary, today's verification, build, metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST

from trader import metrics
from trader.runtime import Runtime, build_info

__all__ = ["create_app"]


def create_app(runtime: Runtime) -> FastAPI:
    """Return the API over a running trader."""
    app = FastAPI(title="tradeloop trader", version=build_info(runtime.mode)["version"])

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """Feed, broker link, outbox, models, rejections and engine counters."""
        outbox: dict[str, Any] = {"enabled": runtime.outbox is not None}
        if runtime.outbox is not None:
            ob = runtime.outbox
            outbox.update(
                depth=ob.depth,
                appended=ob.appended,
                next_seq=ob.next_seq,
                cursor=ob.cursor,
                dir=str(ob.dir),
            )
        broker = runtime.drainer.status() if runtime.drainer is not None else {"link": "off"}
        link_ok = broker["link"] in ("up", "off")
        return {
            "status": "ok" if link_ok else "degraded",
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
            "bar_errors": {"count": runtime.bar_errors, "last": runtime.last_bar_error},
        }

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

    return app
