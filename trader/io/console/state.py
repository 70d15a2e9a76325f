"""What the console shows, as one JSON-safe snapshot of a running trader.

Four panels: account (equity curve, drawdown, PnL, positions with their working
stop and target, working orders, fills), signals (latest decisions and today's
per symbol/strategy numbers), models (serving release, gate, canary, swaps and
rejections) and health (feed, venue, broker link, outbox, kill switch, drift).
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from trader.core.risk import open_pnl_usd
from trader.io.console.feed import ConsoleFeed, EquityPoint

if TYPE_CHECKING:
    from trader.runtime import Runtime

__all__ = ["MAX_CURVE_POINTS", "SwapLog", "snapshot"]

MAX_CURVE_POINTS = 240  # points drawn per curve (the page stays small)
MAX_SWAPS = 8


class SwapLog:
    """The last swaps and rejections, collected from the swapper's latest ones as they change."""

    def __init__(self) -> None:
        self.swaps: deque[dict[str, Any]] = deque(maxlen=MAX_SWAPS)
        self.rejections: deque[dict[str, Any]] = deque(maxlen=MAX_SWAPS)

    def see(self, last_swap: dict[str, Any] | None, last_rejection: dict[str, Any] | None) -> None:
        """Keep `last_swap` and `last_rejection` when they are new."""
        for item, log in ((last_swap, self.swaps), (last_rejection, self.rejections)):
            if item and (not log or log[0] != item):
                log.appendleft(dict(item))


def _downsample(points: list[EquityPoint]) -> list[EquityPoint]:
    if len(points) <= MAX_CURVE_POINTS:
        return points
    step = len(points) / MAX_CURVE_POINTS
    picked = [points[int(i * step)] for i in range(MAX_CURVE_POINTS - 1)]
    return [*picked, points[-1]]


def _drawdown(values: list[float], start: float = 0.0) -> tuple[float, float]:
    """Return (current, maximum) drawdown in USD of a curve that starts at `start`."""
    peak, worst, current = start, 0.0, 0.0
    for v in values:
        peak = max(peak, v)
        current = peak - v
        worst = max(worst, current)
    return round(current, 2), round(worst, 2)


def _curve(points: list[EquityPoint], start: float, open_usd: float) -> dict[str, Any]:
    values = [p.equity_usd for p in points]
    last = values[-1] if values else start
    dd_now, dd_max = _drawdown([*values, last + open_usd], start)
    return {
        "points": [[round(p.ts_s), round(p.equity_usd - start, 2)] for p in _downsample(points)],
        "realised_usd": round(last - start, 2),
        "drawdown_usd": dd_now,
        "max_drawdown_usd": dd_max,
    }


def _account(runtime: Runtime, feed: ConsoleFeed) -> dict[str, Any]:
    engine = runtime.engine
    venue = runtime.venue or engine.venue
    working = venue.working_orders()
    positions = []
    open_total = 0.0
    commission = runtime.settings.commission_per_contract_usd
    for p in venue.positions():
        if p.quantity == 0:
            continue
        bar = engine.last_bar.get(p.symbol)
        inst = engine.instruments.get(p.symbol)
        open_usd = None
        if bar is not None and inst is not None:
            side = 1 if p.quantity > 0 else -1
            open_usd = open_pnl_usd(
                side, abs(p.quantity), p.avg_price, bar.close, inst.point_value_usd, commission
            )
            open_total += open_usd
        mine = [w for w in working if w.symbol == p.symbol]
        positions.append(
            {
                "symbol": p.symbol,
                "contract": p.contract,
                "quantity": p.quantity,
                "avg_price": p.avg_price,
                "last_price": bar.close if bar is not None else None,
                "open_pnl_usd": None if open_usd is None else round(open_usd, 2),
                "stop": next((w.stop_price for w in mine if w.role == "stop"), None),
                "target": next((w.limit_price for w in mine if w.role == "target"), None),
            }
        )
    points = list(feed.equity)
    day = engine.risk.day
    today = [p for p in points if p.trading_day == day]
    before = [p for p in points if p.trading_day != day]
    today_start = before[-1].equity_usd if before else 0.0
    return {
        "session": _curve(points, 0.0, open_total),
        "today": _curve(today, today_start, open_total),
        "open_pnl_usd": round(open_total, 2),
        "trades": feed.trades,
        "positions": positions,
        "working_orders": [
            {
                "client_order_id": w.client_order_id,
                "symbol": w.symbol,
                "role": w.role,
                "side": w.side,
                "quantity": w.quantity,
                "type": w.order_type,
                "stop_price": w.stop_price,
                "limit_price": w.limit_price,
            }
            for w in working
        ],
        "fills": list(feed.fills),
        "order_events": list(feed.order_events)[:12],
    }


def _signals(runtime: Runtime, feed: ConsoleFeed) -> dict[str, Any]:
    rows = []
    for symbol, groups in runtime.engine.today.summary().items():
        for strategy, s in groups.items():
            rows.append({"symbol": symbol, "strategy": strategy, **s})
    return {"decisions": list(feed.decisions), "today": rows}


def _models(runtime: Runtime, log: SwapLog) -> dict[str, Any]:
    status = runtime.models_status()
    swapper = runtime.swapper
    gate = None
    metrics: dict[str, dict[str, float]] = {}
    if swapper is not None:
        log.see(swapper.last_swap, swapper.last_rejection)
        manifest = swapper.serving_manifest
        if manifest is not None:
            metrics = {a.family: dict(a.metrics) for a in manifest.artifacts}
            if manifest.gate is not None:
                gate = manifest.gate.model_dump(mode="json")
    else:
        log.see(None, runtime.last_rejected)
    canary = runtime.router.status() if runtime.router is not None else None
    return {
        "release": status["release"],
        "path": status["path"],
        "versions": status["versions"],
        "loaded_at": status["loaded_at"],
        "swaps": status["swaps"],
        "metrics": metrics,
        "gate": gate,
        "canary": canary,
        "canary_mode": runtime.settings.canary_mode,
        "last_swaps": list(log.swaps),
        "last_rejections": list(log.rejections),
        "rejections": dict(swapper.rejections if swapper else runtime.rejections),
    }


def _health(runtime: Runtime, feed: ConsoleFeed) -> dict[str, Any]:
    venue = runtime.venue or runtime.engine.venue
    broker = runtime.drainer.status() if runtime.drainer is not None else {"link": "off"}
    entries = runtime.entries()
    ks = runtime.killswitch
    return {
        "status": "halted"
        if not entries["allowed"]
        else ("ok" if broker["link"] in ("up", "off") else "degraded"),
        "entries": entries,
        "feed": runtime.feed.describe(),
        "venue": {"name": venue.name, "state": str(venue.state.value)},
        "broker": {"link": broker["link"], "last_error": broker.get("last_error")},
        "outbox_depth": runtime.outbox.depth if runtime.outbox is not None else None,
        "kill_switch": None
        if ks is None
        else {"halted": ks.state.halted, "by": ks.state.by, "reason": ks.state.reason},
        "drift_alerts": list(feed.drift_alerts),
        "reconciliations": list(feed.reconciliations),
        "bar_errors": runtime.bar_errors,
        "bars": runtime.engine.bars,
        "mode": runtime.mode,
        "started_at": datetime.fromtimestamp(runtime.started_at, UTC).isoformat(),
    }


def snapshot(runtime: Runtime, feed: ConsoleFeed, log: SwapLog) -> dict[str, Any]:
    """Return everything the console shows (no clock reading: equal state, equal dict)."""
    return {
        "account": _account(runtime, feed),
        "signals": _signals(runtime, feed),
        "models": _models(runtime, log),
        "health": _health(runtime, feed),
    }
