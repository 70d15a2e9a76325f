"""Feature names and model input vectors shared by trader, streams and training.

One list of names per model; the builders here are the only way a model input is
assembled, in the trader (live, backtest) and in training alike.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from infra.contracts.vocab import (
    FEATURE_NAMES,
    STRATEGIES,
)

META_FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES + tuple(
    f"{s}_{name}" for s in STRATEGIES for name in ("win_rate", "ewm_r")
)
EXEC_FEATURE_NAMES: tuple[str, ...] = (
    FEATURE_NAMES
    + tuple(f"is_{s}" for s in STRATEGIES)
    + ("side", "stop_atr", "reward_risk")
    + ("win_rate", "mean_r", "ewm_r", "drawdown_r", "trade_count")
)
SIZER_FEATURE_NAMES: tuple[str, ...] = (
    "meta_prob",
    "predicted_r",
    "side",
    "stop_atr",
    "atr_pct",
    "rv_30",
    "regime_trend",
    "regime_vol",
    "win_rate",
    "ewm_r",
    "drawdown_r",
)

#: ONNX input and output names every release must use.
MODEL_IO: dict[str, dict[str, str]] = {
    "meta": {"input": "features", "output": "probabilities"},
    "exec": {"input": "features", "output": "variable"},
    "sizer": {"input": "obs", "output": "size"},
}
MODEL_FEATURES: dict[str, tuple[str, ...]] = {
    "meta": META_FEATURE_NAMES,
    "exec": EXEC_FEATURE_NAMES,
    "sizer": SIZER_FEATURE_NAMES,
}
SIZE_MIN, SIZE_MAX = 0.1, 2.0

_IDX = {name: i for i, name in enumerate(FEATURE_NAMES)}
_EMPTY: Mapping[str, float] = {}


def _stream(stream: Mapping[str, Mapping[str, float]], strategy: str, name: str) -> float:
    return float(stream.get(strategy, _EMPTY).get(name, 0.0))


def meta_vector(
    market: np.ndarray, stream: Mapping[str, Mapping[str, float]], out: np.ndarray | None = None
) -> np.ndarray:
    """Return the meta classifier input: market features + each strategy's win rate and EW R."""
    vec = out if out is not None else np.empty(len(META_FEATURE_NAMES), dtype=np.float32)
    n = len(FEATURE_NAMES)
    vec[:n] = market
    i = n
    for s in STRATEGIES:
        vec[i] = _stream(stream, s, "win_rate")
        vec[i + 1] = _stream(stream, s, "ewm_r")
        i += 2
    return vec


def exec_vector(
    market: np.ndarray,
    strategy: str,
    side: int,
    stop_atr: float,
    reward_risk: float,
    strategy_stream: Mapping[str, float],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return the execution-quality input for one candidate (side: +1 long, -1 short)."""
    vec = out if out is not None else np.empty(len(EXEC_FEATURE_NAMES), dtype=np.float32)
    n = len(FEATURE_NAMES)
    vec[:n] = market
    for j, s in enumerate(STRATEGIES):
        vec[n + j] = 1.0 if s == strategy else 0.0
    k = n + len(STRATEGIES)
    vec[k] = float(side)
    vec[k + 1] = stop_atr
    vec[k + 2] = reward_risk
    for j, name in enumerate(("win_rate", "mean_r", "ewm_r", "drawdown_r", "trade_count")):
        vec[k + 3 + j] = float(strategy_stream.get(name, 0.0))
    return vec


def sizer_vector(
    market: np.ndarray,
    meta_prob: float,
    predicted_r: float,
    side: int,
    stop_atr: float,
    strategy_stream: Mapping[str, float],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return the RL sizer observation for one candidate."""
    vec = out if out is not None else np.empty(len(SIZER_FEATURE_NAMES), dtype=np.float32)
    vec[0] = meta_prob
    vec[1] = predicted_r
    vec[2] = float(side)
    vec[3] = stop_atr
    vec[4] = market[_IDX["atr_pct"]]
    vec[5] = market[_IDX["rv_30"]]
    vec[6] = market[_IDX["regime_trend"]]
    vec[7] = market[_IDX["regime_vol"]]
    vec[8] = float(strategy_stream.get("win_rate", 0.0))
    vec[9] = float(strategy_stream.get("ewm_r", 0.0))
    vec[10] = float(strategy_stream.get("drawdown_r", 0.0))
    return vec
