"""Pure stream feature logic: values, determinism, exact restore, exactly-once folding."""

from __future__ import annotations

import datetime as dt
import math
import statistics

import pytest

from features.stream import (
    VIEW_FEATURES,
    KeyState,
    Source,
    StreamFeatureState,
    derived_id,
)
from infra.contracts import (
    STRATEGY_STREAM_FEATURES,
    SYMBOL_STREAM_FEATURES,
    Bar,
    DriftAlert,
    FeatureUpdate,
    TradeOutcome,
    decode,
    encode,
)
from tests.kit.synth import synthetic_events

T0 = dt.datetime(2024, 3, 4, 14, 30, tzinfo=dt.UTC)


def outcome(i: int, r: float, strategy: str = "S2", counterfactual: bool = False) -> TradeOutcome:
    ts = T0 + dt.timedelta(minutes=i)
    return TradeOutcome(
        event_id=f"o{i}",
        ts_event=ts,
        ts_init=ts,
        signal_id=f"s{i}",
        symbol="ES",
        strategy=strategy,
        side="long",
        entry_ts=ts,
        entry_price=5000.0,
        exit_ts=ts,
        exit_price=5001.0,
        quantity=1,
        pnl_usd=r * 100,
        r_multiple=r,
        mae_r=-0.5,
        mfe_r=1.0,
        exit_reason="target" if r > 0 else "stop",
        counterfactual=counterfactual,
    )


def test_strategy_values_match_a_direct_computation() -> None:
    rs = [1.5, -1.0, 2.0, -1.0, -1.0, 0.5, 3.0, -1.0]
    state = StreamFeatureState()
    for i, r in enumerate(rs):
        state.learn(outcome(i, r, counterfactual=i % 2 == 0))
    got = state.strategy_values("ES")["S2"]
    assert set(got) == set(STRATEGY_STREAM_FEATURES)
    assert got["trade_count"] == len(rs)  # counterfactual outcomes count
    assert got["win_rate"] == pytest.approx(sum(r > 0 for r in rs) / len(rs))
    assert got["mean_r"] == pytest.approx(statistics.fmean(rs))
    ewm = rs[0]
    for r in rs[1:]:
        ewm = 0.1 * r + 0.9 * ewm
    assert got["ewm_r"] == pytest.approx(ewm)
    cum = peak = 0.0
    for r in rs:
        cum += r
        peak = max(peak, cum)
    assert got["drawdown_r"] == pytest.approx(peak - cum)
    assert got["signal_rate"] == 0.0


def test_rolling_window_forgets_old_trades() -> None:
    state = StreamFeatureState()
    for i in range(50):
        state.learn(outcome(i, -1.0))
    for i in range(50, 100):
        state.learn(outcome(i, 2.0))
    got = state.strategy_values("ES")["S2"]
    assert got["win_rate"] == pytest.approx(1.0)
    assert got["mean_r"] == pytest.approx(2.0)
    assert got["trade_count"] == 100


def test_symbol_values_and_signal_rate() -> None:
    state = StreamFeatureState()
    events = list(synthetic_events(3000))
    state.learn_many(events)  # type: ignore[arg-type]
    sym = state.symbol_values("ES")
    assert set(sym) == set(SYMBOL_STREAM_FEATURES)
    closes = [e.close for e in events if isinstance(e, Bar) and e.symbol == "ES"]
    rets = [math.log(b / a) for a, b in zip(closes[-31:-1], closes[-30:], strict=True)]
    assert sym["realized_vol"] == pytest.approx(statistics.stdev(rets), rel=1e-9)
    assert sym["regime"] in (-1.0, 0.0, 1.0)
    rates = [v["signal_rate"] for v in state.strategy_values("ES").values()]
    assert any(r > 0 for r in rates)


def test_outputs_are_deterministic_and_ids_derive_from_the_trigger() -> None:
    events = list(synthetic_events(2000))
    a = StreamFeatureState().learn_many(events)  # type: ignore[arg-type]
    b = StreamFeatureState().learn_many(events)  # type: ignore[arg-type]
    assert [o.model_dump() for o in a] == [o.model_dump() for o in b]
    first = next(o for o in a if isinstance(o, FeatureUpdate))
    assert first.event_id == derived_id(events[0].event_id, first.feature_view)
    assert first.ts_event == events[0].ts_event
    assert {o.feature_view for o in a if isinstance(o, FeatureUpdate)} == set(VIEW_FEATURES)


def test_updates_built_without_validation_equal_validated_ones() -> None:
    events = list(synthetic_events(3000))
    updates = [
        o
        for o in StreamFeatureState().learn_many(events)  # type: ignore[arg-type]
        if isinstance(o, FeatureUpdate)
    ]
    assert len(updates) == len(events)
    for u in updates:
        again = decode(encode(u), FeatureUpdate)
        assert again == u
        assert again.model_fields_set == u.model_fields_set
        assert FeatureUpdate.model_validate(u.model_dump()) == u


def test_restored_state_continues_exactly() -> None:
    events = list(synthetic_events(3000))
    full = StreamFeatureState()
    full.learn_many(events)  # type: ignore[arg-type]
    first = StreamFeatureState()
    first.learn_many(events[:1234])  # type: ignore[arg-type]
    blobs = first.to_state()
    assert all(isinstance(v, bytes) for v in blobs.values())
    second = StreamFeatureState.from_state(blobs)
    second.learn_many(events[1234:])  # type: ignore[arg-type]
    for sym in ("ES", "NQ"):
        assert second.strategy_values(sym) == full.strategy_values(sym)  # bit for bit
        assert second.symbol_values(sym) == full.symbol_values(sym)


def test_a_re_read_record_is_folded_once_and_re_emits_identically() -> None:
    state = StreamFeatureState()
    out1 = state.learn(outcome(0, 1.0), Source("t.outcomes", 0, 10))
    out2 = state.learn(outcome(1, -1.0), Source("t.outcomes", 0, 11))
    before = state.strategy_values("ES")
    again_old = state.learn(outcome(0, 1.0), Source("t.outcomes", 0, 10))
    again_last = state.learn(outcome(1, -1.0), Source("t.outcomes", 0, 11))
    assert state.strategy_values("ES") == before
    assert [o.model_dump() for o in again_last] == [o.model_dump() for o in out2]
    assert [o.model_dump() for o in again_old] == [
        o.model_dump() for o in out2
    ]  # latest of the key
    assert out1[0].event_id != out2[0].event_id


def test_drift_alert_when_r_distribution_shifts() -> None:
    state = StreamFeatureState()
    alerts = []
    for i in range(400):
        r = 1.0 + 0.1 * math.sin(i) if i < 200 else -1.0 + 0.1 * math.sin(i)
        alerts += [o for o in state.learn(outcome(i, r)) if isinstance(o, DriftAlert)]
    assert alerts, "ADWIN should flag the shift from +1R to -1R"
    assert alerts[0].metric == "r_multiple" and alerts[0].detector == "ADWIN"
    assert alerts[0].ts_event >= T0 + dt.timedelta(minutes=200)
    assert alerts[0].strategy == "S2" and alerts[0].symbol == "ES"


def test_key_state_round_trip_and_rejects_other_objects() -> None:
    state = StreamFeatureState()
    state.learn(outcome(0, 1.0))
    piece = state.store["o|ES|S2"]
    assert KeyState.from_bytes(piece.to_bytes()).values == piece.values
    import pickle

    with pytest.raises(TypeError):
        KeyState.from_bytes(pickle.dumps({"not": "a state"}))
