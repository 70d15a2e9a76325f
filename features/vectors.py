"""Feature names and model input vectors shared by trader, streams and training.

One list of names per model; the builders here are the only way a model input is
assembled, in the trader (live, backtest) and in training alike. Each fills its row
with one assignment from a list of Python floats (the market features as
`MarketFeatures.values()` gives them), which numpy rounds to float32 once.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

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


#: float32 packers of each row's width: struct rounds each double to float32 exactly
#: as numpy does, in one C loop (about half the time of a slice assignment from a list)
_PACK = {
    n: struct.Struct(f"={n}f").pack_into
    for n in {len(META_FEATURE_NAMES), len(EXEC_FEATURE_NAMES), len(SIZER_FEATURE_NAMES)}
}


def _fill(vec: np.ndarray, values: list[float]) -> None:
    """Write `values` into the first len(values) places of the float32 row `vec`."""
    if vec.dtype.char == "f" and vec.flags.c_contiguous:
        try:
            _PACK[len(values)](vec, 0, *values)  # type: ignore[arg-type]  # numpy: a buffer
            return
        except (struct.error, TypeError, OverflowError, KeyError):
            pass  # numpy's conversion below decides (and raises) as before
    vec[: len(values)] = values


_ONE_HOT = {s: tuple(1.0 if t == s else 0.0 for t in STRATEGIES) for s in STRATEGIES}
_NO_STRATEGY = (0.0,) * len(STRATEGIES)
_SIZER_MARKET = tuple(_IDX[n] for n in ("atr_pct", "rv_30", "regime_trend", "regime_vol"))


def meta_stream_values(stream: Mapping[str, Mapping[str, float]]) -> list[float]:
    """Return the stream part of the meta input: each strategy's win rate and EW R."""
    values: list[float] = []
    for s in STRATEGIES:
        own = stream.get(s, _EMPTY)
        values.append(float(own.get("win_rate", 0.0)))
        values.append(float(own.get("ewm_r", 0.0)))
    return values


def meta_vector(
    market: Sequence[float] | np.ndarray,
    stream: Mapping[str, Mapping[str, float]],
    out: np.ndarray | None = None,
    stream_values: Sequence[float] | None = None,
) -> np.ndarray:
    """Return the meta classifier input: market features + each strategy's win rate and EW R.

    `stream_values` is `meta_stream_values(stream)` when the caller already has it.
    """
    vec = out if out is not None else np.empty(len(META_FEATURE_NAMES), dtype=np.float32)
    tail = stream_values if stream_values is not None else meta_stream_values(stream)
    _fill(vec, [*market, *tail])
    return vec


def exec_vector(
    market: Sequence[float] | np.ndarray,
    strategy: str,
    side: int,
    stop_atr: float,
    reward_risk: float,
    strategy_stream: Mapping[str, float],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return the execution-quality input for one candidate (side: +1 long, -1 short)."""
    vec = out if out is not None else np.empty(len(EXEC_FEATURE_NAMES), dtype=np.float32)
    get = strategy_stream.get
    values = [
        *market,
        *_ONE_HOT.get(strategy, _NO_STRATEGY),
        float(side),
        stop_atr,
        reward_risk,
        float(get("win_rate", 0.0)),
        float(get("mean_r", 0.0)),
        float(get("ewm_r", 0.0)),
        float(get("drawdown_r", 0.0)),
        float(get("trade_count", 0.0)),
    ]
    _fill(vec, values)
    return vec


def sizer_vector(
    market: Sequence[float] | np.ndarray,
    meta_prob: float,
    predicted_r: float,
    side: int,
    stop_atr: float,
    strategy_stream: Mapping[str, float],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return the RL sizer observation for one candidate."""
    vec = out if out is not None else np.empty(len(SIZER_FEATURE_NAMES), dtype=np.float32)
    a, b, c, d = _SIZER_MARKET
    get = strategy_stream.get
    values = [
        meta_prob,
        predicted_r,
        float(side),
        stop_atr,
        market[a],
        market[b],
        market[c],
        market[d],
        float(get("win_rate", 0.0)),
        float(get("ewm_r", 0.0)),
        float(get("drawdown_r", 0.0)),
    ]
    _fill(vec, values)
    return vec
