"""Feast definitions of tradeloop: entities, lake file sources, push sources, views.

The lake location comes from `feature_store.yaml` beside this file (rendered from
settings by `tradeloop features apply`), so `feast apply`, `feast materialize` and
`feast serve` work in this directory as they are.

Stream feature views read the lake's `features` dataset; each view has its own
timestamp column (`ts_<view>`), set only on that view's rows, so one dataset holds
all three views without a view ever seeing another's rows in a point-in-time join.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Bool, Float64, Int64, String

from infra.contracts.vocab import FEATURE_NAMES, STRATEGIES, STREAM_VIEW_FEATURES

HERE = Path(__file__).resolve().parent
TTL = timedelta(days=3650)

STRATEGY_STATS = STREAM_VIEW_FEATURES["strategy_stats"]
SIGNAL_STATS = STREAM_VIEW_FEATURES["signal_stats"]
SYMBOL_STATS = STREAM_VIEW_FEATURES["symbol_stats"]


def _config() -> dict[str, Any]:
    path = HERE / "feature_store.yaml"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: render it with `tradeloop features apply` (or `features render`)"
        )
    return dict(yaml.safe_load(path.read_text()))


_offline = _config().get("offline_store") or {}
LAKE = str(_offline.get("lake_uri") or (HERE / "data" / "lake")).rstrip("/")
S3_ENDPOINT = str(_offline.get("s3_endpoint_override") or "")


def _source(name: str, topic: str, timestamp_field: str) -> FileSource:
    return FileSource(
        name=name,
        path=f"{LAKE}/{topic}",
        file_format=ParquetFormat(),
        timestamp_field=timestamp_field,
        s3_endpoint_override=S3_ENDPOINT or None,
        description=f"event lake: {topic} topic",
    )


symbol = Entity(name="symbol", join_keys=["symbol"], value_type=ValueType.STRING)
strategy = Entity(name="strategy", join_keys=["strategy"], value_type=ValueType.STRING)


def _floats(names: tuple[str, ...]) -> list[Field]:
    return [Field(name=n, dtype=Float64) for n in names]


def _stream_view(view: str, names: tuple[str, ...], entities: list[Entity]) -> tuple[Any, ...]:
    batch = _source(f"lake_{view}", "features", f"ts_{view}")
    push = PushSource(name=f"{view}_push", batch_source=batch)
    fv = FeatureView(
        name=view,
        entities=entities,
        ttl=TTL,
        schema=_floats(names),
        source=push,
        online=True,
        description=f"stream features ({view}) pushed by the streams worker",
    )
    return batch, push, fv


strategy_stats_source, strategy_stats_push, strategy_stats = _stream_view(
    "strategy_stats", STRATEGY_STATS, [symbol, strategy]
)
signal_stats_source, signal_stats_push, signal_stats = _stream_view(
    "signal_stats", SIGNAL_STATS, [symbol, strategy]
)
symbol_stats_source, symbol_stats_push, symbol_stats = _stream_view(
    "symbol_stats", SYMBOL_STATS, [symbol]
)

signals_source = _source("lake_signals", "signals", "event_timestamp")
signal_snapshots = FeatureView(
    name="signal_snapshots",
    entities=[symbol, strategy],
    ttl=TTL,
    schema=[
        *_floats(FEATURE_NAMES),
        Field(name="taken", dtype=Bool),
        Field(name="predicted_r", dtype=Float64),
        Field(name="size_multiplier", dtype=Float64),
        *_floats(tuple(f"prob_{s}" for s in STRATEGIES)),
        Field(name="side", dtype=String),
    ],
    source=signals_source,
    online=True,
    description="the latest signal snapshot per symbol and strategy (market features)",
)

outcomes_source = _source("lake_outcomes", "outcomes", "event_timestamp")
trade_outcomes = FeatureView(
    name="trade_outcomes",
    entities=[symbol, strategy],
    ttl=TTL,
    schema=[
        *_floats(("r_multiple", "pnl_usd", "mae_r", "mfe_r", "commission_usd")),
        Field(name="quantity", dtype=Int64),
        Field(name="counterfactual", dtype=Bool),
        Field(name="exit_reason", dtype=String),
    ],
    source=outcomes_source,
    online=True,
    description="the latest trade outcome per symbol and strategy",
)

#: Every Feast object of the repo, for `TradeloopFeatureStore.apply()`.
OBJECTS: list[Any] = [
    symbol,
    strategy,
    strategy_stats_source,
    strategy_stats_push,
    strategy_stats,
    signal_stats_source,
    signal_stats_push,
    signal_stats,
    symbol_stats_source,
    symbol_stats_push,
    symbol_stats,
    signals_source,
    signal_snapshots,
    outcomes_source,
    trade_outcomes,
]
STREAM_VIEWS = STREAM_VIEW_FEATURES
