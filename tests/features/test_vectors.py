"""Model input builders: every value lands at its named position, rounded once to float32."""

from __future__ import annotations

import numpy as np

from features.vectors import (
    MODEL_FEATURES,
    exec_vector,
    meta_vector,
    sizer_vector,
)
from infra.contracts import FEATURE_NAMES, STRATEGIES

MARKET = [0.1 * (i + 1) + 1e-9 for i in range(len(FEATURE_NAMES))]  # not float32-exact
STREAM = {
    s: {
        "win_rate": 0.4 + 0.01 * j,
        "ewm_r": 0.2 - 0.03 * j,
        "mean_r": 0.1 * j,
        "drawdown_r": -1.5 * j,
        "trade_count": 10.0 + j,
    }
    for j, s in enumerate(STRATEGIES)
}


def _at(family: str, vec: np.ndarray) -> dict[str, float]:
    names = MODEL_FEATURES[family]
    assert vec.shape == (len(names),) and vec.dtype == np.float32
    return dict(zip(names, vec.tolist(), strict=True))


def _f32(x: float) -> float:
    return float(np.float32(x))


def test_meta_vector_places_market_and_each_strategy_s_stream_values() -> None:
    got = _at("meta", meta_vector(MARKET, STREAM))
    for name, value in zip(FEATURE_NAMES, MARKET, strict=True):
        assert got[name] == _f32(value)
    for s in STRATEGIES:
        assert got[f"{s}_win_rate"] == _f32(STREAM[s]["win_rate"])
        assert got[f"{s}_ewm_r"] == _f32(STREAM[s]["ewm_r"])
    empty = _at("meta", meta_vector(MARKET, {}))
    assert all(empty[f"{s}_ewm_r"] == 0.0 for s in STRATEGIES)


def test_exec_vector_one_hot_side_geometry_and_own_stream() -> None:
    out = np.full((1, len(MODEL_FEATURES["exec"])), np.nan, np.float32)
    exec_vector(MARKET, "S6", -1, 1.5, 2.0, STREAM["S6"], out=out[0])
    got = _at("exec", out[0])
    assert [got[f"is_{s}"] for s in STRATEGIES] == [1.0 if s == "S6" else 0.0 for s in STRATEGIES]
    assert (got["side"], got["stop_atr"], got["reward_risk"]) == (-1.0, 1.5, 2.0)
    for name in ("win_rate", "mean_r", "ewm_r", "drawdown_r", "trade_count"):
        assert got[name] == _f32(STREAM["S6"][name])
    assert got["atr_pct"] == _f32(MARKET[FEATURE_NAMES.index("atr_pct")])
    unknown = _at("exec", exec_vector(MARKET, "S99", 1, 1.0, 1.0, {}))
    assert all(unknown[f"is_{s}"] == 0.0 for s in STRATEGIES) and unknown["trade_count"] == 0.0


def test_sizer_vector_takes_the_model_outputs_and_four_market_features() -> None:
    got = _at("sizer", sizer_vector(MARKET, 0.31, -0.25, 1, 1.25, STREAM["S2"]))
    assert got["meta_prob"] == _f32(0.31) and got["predicted_r"] == _f32(-0.25)
    assert (got["side"], got["stop_atr"]) == (1.0, 1.25)
    for name in ("atr_pct", "rv_30", "regime_trend", "regime_vol"):
        assert got[name] == _f32(MARKET[FEATURE_NAMES.index(name)])
    for name in ("win_rate", "ewm_r", "drawdown_r"):
        assert got[name] == _f32(STREAM["S2"][name])


def test_a_float32_market_row_gives_the_same_inputs_as_its_python_floats() -> None:
    row = np.asarray(MARKET, np.float32)
    assert np.array_equal(meta_vector(row, STREAM), meta_vector(MARKET, STREAM))
    assert np.array_equal(
        exec_vector(row, "S3", 1, 1.0, 1.5, STREAM["S3"]),
        exec_vector(MARKET, "S3", 1, 1.0, 1.5, STREAM["S3"]),
    )
    assert np.array_equal(
        sizer_vector(row, 0.5, 0.1, -1, 2.0, STREAM["S3"]),
        sizer_vector(MARKET, 0.5, 0.1, -1, 2.0, STREAM["S3"]),
    )
