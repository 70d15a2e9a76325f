"""Factories of valid events for tests (one per contract)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from infra.contracts import (
    FEATURE_NAMES,
    Artifact,
    Bar,
    DeadLetter,
    Decision,
    DriftAlert,
    Event,
    FeatureUpdate,
    GateResult,
    ModelManifest,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    PositionReconciled,
    SignalSnapshot,
    TradeOutcome,
)

T0 = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def bar(i: int = 0, symbol: str = "ES", price: float = 5000.0) -> Bar:
    """Return the i-th one-minute bar."""
    return Bar(
        ts_event=T0 + timedelta(minutes=i),
        symbol=symbol,
        open=price,
        high=price + 1.0,
        low=price - 1.0,
        close=price + 0.25,
        volume=1200,
    )


def signal(i: int = 0, symbol: str = "ES", strategy: str = "S2") -> SignalSnapshot:
    """Return a taken signal snapshot."""
    return SignalSnapshot(
        ts_event=T0 + timedelta(minutes=i),
        symbol=symbol,
        strategy=strategy,
        side="long",
        entry=5000.25,
        stop=4995.0,
        target=5010.75,
        feature_names=FEATURE_NAMES,
        features=tuple(float(j) / 10 for j in range(len(FEATURE_NAMES))),
        candidates=("S2", "S6"),
        model_versions={"meta": "r1", "exec": "r1", "sizer": "r1"},
        decision=Decision(
            path="models",
            taken=True,
            reason="meta choice",
            chosen_strategy=strategy,
            probabilities={"S2": 0.6, "S3": 0.1, "S6": 0.2, "S11": 0.1},
            predicted_r=0.4,
            size_multiplier=1.3,
            contracts=2,
        ),
    )


def outcome(i: int = 0, signal_id: str = "sig", r: float = 1.5) -> TradeOutcome:
    """Return a closed trade outcome."""
    entry = T0 + timedelta(minutes=i)
    return TradeOutcome(
        ts_event=entry + timedelta(minutes=12),
        signal_id=signal_id,
        symbol="ES",
        strategy="S2",
        side="long",
        entry_ts=entry,
        entry_price=5000.25,
        exit_ts=entry + timedelta(minutes=12),
        exit_price=5008.0,
        quantity=2,
        pnl_usd=r * 525.0,
        r_multiple=r,
        mae_r=-0.3,
        mfe_r=1.8,
        commission_usd=4.5,
        exit_reason="target",
    )


def manifest(sequence: int = 1) -> ModelManifest:
    """Return an unsigned manifest with one artifact."""
    return ModelManifest(
        ts_event=T0,
        release=f"r{sequence}",
        sequence=sequence,
        artifacts=(
            Artifact(
                family="meta",
                version=f"r{sequence}",
                uri="s3://b/models/meta/r1/model.onnx",
                s3_version_id="v1",
                sha256="0" * 64,
                size_bytes=1024,
                input_names=("features",),
                output_names=("probabilities",),
                metrics={"log_loss": 0.61, "auc": 0.58},
            ),
        ),
        gate=GateResult(decision="first", reasons=("no champion",)),
        key_id="k1",
    )


def order_events(symbol: str = "ES") -> list[Event]:
    """Return one valid instance of every order contract (a bracket's life, then a reconcile)."""
    ids = {"venue": "paper", "symbol": symbol, "contract": "ESZ6", "ts_event": T0}
    return [
        OrderSubmitted(
            **ids,
            client_order_id="c1-entry",
            role="entry",
            side="buy",
            quantity=2,
            order_type="limit",
            limit_price=5000.0,
            signal_id="sig-1",
            strategy="S2",
        ),
        OrderAccepted(**ids, client_order_id="c1-entry", venue_order_id="v1", quantity=2),
        OrderRejected(**ids, client_order_id="c2-entry", reason="insufficient margin"),
        OrderFilled(
            **ids,
            client_order_id="c1-entry",
            venue_order_id="v1",
            role="entry",
            side="buy",
            fill_price=5000.0,
            quantity=1,
            cumulative_quantity=1,
            leaves_quantity=1,
            commission_usd=2.25,
            venue_fill_id="f1",
        ),
        OrderCancelled(**ids, client_order_id="c1-stop", reason="oco"),
        OrderExpired(**ids, client_order_id="c3-entry", reason="day order"),
        PositionReconciled(**ids, quantity=1, avg_price=5000.0, status="matched"),
    ]


def every_contract() -> list[Event]:
    """Return one valid instance of every contract."""
    return [
        bar(),
        signal(),
        outcome(),
        FeatureUpdate(
            ts_event=T0,
            feature_view="strategy_stats",
            symbol="ES",
            strategy="S2",
            values={"win_rate": 0.5},
        ),
        DriftAlert(
            ts_event=T0,
            symbol="ES",
            strategy="S2",
            metric="r_multiple",
            detector="ADWIN",
            value=-0.4,
        ),
        *order_events(),
        manifest(),
        DeadLetter.from_record(
            topic="tradeloop.bars",
            partition=1,
            offset=7,
            key=b"ES",
            value=b"\xffnot json",
            error=ValueError("bad"),
        ),
    ]
