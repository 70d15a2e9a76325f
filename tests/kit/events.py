"""Event builders and comparers shared by tests (no tests of its own)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from infra.contracts import (
    Artifact,
    Bar,
    DeadLetter,
    DriftAlert,
    Event,
    GateResult,
    ModelManifest,
    TradeOutcome,
)


def outcome(
    now: datetime,
    symbol: str,
    strategy: str,
    pnl_usd: float,
    r_multiple: float,
    *,
    counterfactual: bool = False,
    exit_ts: datetime | None = None,
    event_id: str | None = None,
) -> TradeOutcome:
    """Return a closed long trade exiting at `exit_ts` (default `now`)."""
    exit_at = exit_ts or now
    extra = {"event_id": event_id} if event_id else {}
    return TradeOutcome(
        ts_event=exit_at,
        signal_id=f"sig-{symbol}-{strategy}-{pnl_usd}",
        symbol=symbol,
        strategy=strategy,
        side="long",
        entry_ts=exit_at - timedelta(minutes=7),
        entry_price=5000.0,
        exit_ts=exit_at,
        exit_price=5001.0,
        quantity=1,
        pnl_usd=pnl_usd,
        r_multiple=r_multiple,
        mae_r=-0.3,
        mfe_r=1.4,
        exit_reason="target" if pnl_usd > 0 else "stop",
        counterfactual=counterfactual,
        **extra,
    )


def dead_letter(now: datetime, reason: str, offset: int = 7) -> DeadLetter:
    """Return a dead letter for an undecodable bar."""
    return DeadLetter.from_record(
        topic="bars",
        partition=1,
        offset=offset,
        key=b"ES",
        value=b"{not json",
        error=ValueError(reason),
        consumer="streams",
        ts_event=now,
    )


def drift(now: datetime, metric: str = "r_multiple") -> DriftAlert:
    """Return an ADWIN drift alert on ES/S2."""
    return DriftAlert(
        ts_event=now, symbol="ES", strategy="S2", metric=metric, detector="ADWIN", value=-0.8
    )


def manifest(now: datetime, release: str, sequence: int) -> ModelManifest:
    """Return an (unsigned) manifest with three artifacts and gate metrics."""
    arts = tuple(
        Artifact(
            family=fam,
            version=release,
            uri=f"s3://b/models/{fam}/{release}/model.onnx",
            sha256=hashlib.sha256(f"{fam}{release}".encode()).hexdigest(),
            size_bytes=1234,
            input_names=("features",),
            metrics=metrics,
        )
        for fam, metrics in (
            ("meta", {"accuracy": 0.41, "log_loss": 1.2, "brier": 0.18}),
            ("exec", {"mae": 0.7, "r2": 0.05}),
            ("sizer", {"mean_reward": 0.12}),
        )
    )
    return ModelManifest(
        ts_event=now,
        release=release,
        sequence=sequence,
        artifacts=arts,
        gate=GateResult(decision="release"),
        key_id="k1",
    )


def bar(now: datetime, symbol: str = "ES", close: float = 5000.0) -> Bar:
    """Return a one-minute bar closing at `now`."""
    return Bar(
        ts_event=now,
        symbol=symbol,
        open=close,
        high=close + 1,
        low=close - 1,
        close=close,
        volume=100,
    )


def content(ev: Event, ids: dict[str, int]) -> dict[str, Any]:
    """Return an event's wire dict without `ts_init`, its ids numbered in order of appearance.

    Two runs over the same bars then compare equal event by event: ids and
    `ts_init` are the only fields that differ by construction.
    """
    body = ev.to_dict()
    body.pop("ts_init")
    ids.setdefault(body.pop("event_id"), len(ids))
    if "signal_id" in body:
        body["signal_id"] = ids[body["signal_id"]]
    return body
