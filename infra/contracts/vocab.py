"""The project's vocabularies, each spelled once: strategies, model families, features, views.

Everything else imports these names; a test greps the tree for stray copies.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "FEATURE_NAMES",
    "MODEL_FAMILIES",
    "OUTCOME_STREAM_FEATURES",
    "PIT_ENGINES",
    "RULE_PRIORITY",
    "SIGNAL_STREAM_FEATURES",
    "STRATEGIES",
    "STRATEGY_STREAM_FEATURES",
    "STREAM_FEATURE_COLUMNS",
    "STREAM_VIEWS",
    "STREAM_VIEW_FEATURES",
    "SYMBOL_STREAM_FEATURES",
    "PitEngine",
    "Side",
    "StrategyId",
]

StrategyId = Literal["S2", "S3", "S6", "S11"]
#: The four rule-based strategies of the seed design, in model-output order.
STRATEGIES: tuple[str, ...] = ("S2", "S3", "S6", "S11")
#: The rules path's choice among a bar's candidates: the first in this order.
RULE_PRIORITY: tuple[str, ...] = ("S6", "S2", "S11", "S3")
Side = Literal["long", "short"]
#: The three model families of a release.
MODEL_FAMILIES: tuple[str, ...] = ("meta", "exec", "sizer")
#: Point-in-time join engines of the training dataset (`training.datasets`).
PitEngine = Literal["duckdb", "asof", "feast", "auto"]
PIT_ENGINES: tuple[str, ...] = ("duckdb", "asof", "feast", "auto")

#: Snapshot features computed per bar by `features.compute` (seed design's 17 and more).
FEATURE_NAMES: tuple[str, ...] = (
    "ret_1",
    "ret_5",
    "ret_15",
    "ret_60",
    "atr_14",
    "atr_pct",
    "rv_30",
    "rsi_14",
    "bb_pctb_20",
    "bb_width_20",
    "ema_spread",
    "ema_slope",
    "volume_z_30",
    "range_pos_60",
    "tod_sin",
    "tod_cos",
    "session_rth",
    "session_open_30",
    "regime_trend",
    "regime_vol",
)

#: Stream features per (symbol, strategy) folded from outcomes (`features.stream`).
OUTCOME_STREAM_FEATURES: tuple[str, ...] = (
    "win_rate",
    "mean_r",
    "ewm_r",
    "drawdown_r",
    "trade_count",
)
#: Stream features per (symbol, strategy) folded from signals.
SIGNAL_STREAM_FEATURES: tuple[str, ...] = ("signal_rate",)
#: Every stream feature per (symbol, strategy).
STRATEGY_STREAM_FEATURES: tuple[str, ...] = OUTCOME_STREAM_FEATURES + SIGNAL_STREAM_FEATURES
#: Stream features per symbol.
SYMBOL_STREAM_FEATURES: tuple[str, ...] = ("realized_vol", "regime")
#: Every stream feature value column (lake `features` topic, Feast views).
STREAM_FEATURE_COLUMNS: tuple[str, ...] = STRATEGY_STREAM_FEATURES + SYMBOL_STREAM_FEATURES
#: Stream feature views and the features each holds.
STREAM_VIEW_FEATURES: dict[str, tuple[str, ...]] = {
    "strategy_stats": OUTCOME_STREAM_FEATURES,
    "signal_stats": SIGNAL_STREAM_FEATURES,
    "symbol_stats": SYMBOL_STREAM_FEATURES,
}
STREAM_VIEWS: tuple[str, ...] = tuple(STREAM_VIEW_FEATURES)
