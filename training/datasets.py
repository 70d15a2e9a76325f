"""Point-in-time training frames from the event lake, stream features and outcomes.

- Entity frame: the signal snapshots of a lake (`signals` topic), one row per
  candidate signal, with its 20 market features as logged at decision time.
- Labels: the outcome with the same `signal_id` (`outcomes` topic). Every candidate
  has one; the ones the trader did not take are `counterfactual=True` simulations.
  Signals whose outcome is not in the lake yet are left out (and counted).
- Stream features: per (symbol, strategy) `strategy_stats` (win rate, mean/EW R,
  drawdown, trade count) as of each signal's `ts_event`, joined point in time
  through the Feast repo (`features.store.TradeloopFeatureStore.historical`), or by
  the equivalent as-of join over the very dataset the Feast view reads when the
  frame is too large for Feast's dask join (see `join_stream_features`). A value
  stamped after the signal never appears in its row; a strategy with no outcome
  yet gets 0.0, as in the live trader's stream cache. The `duckdb` engine
  (`training.pit_duckdb`, the default) builds the same frames out of core.
- Meta labels: per decision point (source, run, symbol, bar) the strategy whose
  candidate had the highest R-multiple (real or counterfactual); ties go to the
  first in `STRATEGIES` order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.vectors import EXEC_FEATURE_NAMES, META_FEATURE_NAMES
from infra.contracts import FEATURE_NAMES, STRATEGIES, PitEngine
from infra.settings import Settings
from training.config import DataError, TrainConfig
from training.frames import (
    OUTCOME_COLS,
    OWN_STREAM,
    SIGNAL_COLS,
    STREAM_REFS,
    STREAM_VIEW,
    WIDE_COLUMNS,
    LakeFrames,
    TrainingData,
    keep_recent,
    load_lake,
    read_columns,
)

if TYPE_CHECKING:
    from training.executor import Executor
    from training.pit_duckdb import DuckDBOptions

__all__ = [
    "OUTCOME_COLS",
    "OWN_STREAM",
    "SIGNAL_COLS",
    "STREAM_REFS",
    "WIDE_COLUMNS",
    "LakeFrames",
    "TrainingData",
    "assemble",
    "build_training_data",
    "join_stream_features",
    "load_lake",
    "read_columns",
]

log = logging.getLogger(__name__)

#: Above this many (entity row x feature row per key) pairs, Feast's dask join, which
#: merges every entity row with every feature row of its key before filtering by
#: time, runs out of memory; `auto` then uses the as-of join.
FEAST_MAX_PAIRS = 5_000_000


def _feature_rows(lake: str, settings: Settings) -> pd.DataFrame:
    """Read the rows the Feast `strategy_stats` view reads: its lake dataset, in lake order.

    Same rows as `features.repo.lake_offline.read_lake_dataset` (every `features`
    file, rows whose `ts_strategy_stats` is set), read without importing Feast.
    """
    import pyarrow.compute as pc

    cols = ["symbol", "strategy", f"ts_{STREAM_VIEW}", *OWN_STREAM]
    table = read_columns(lake, "features", cols, settings)
    table = table.filter(pc.is_valid(table.column(f"ts_{STREAM_VIEW}")))
    return table.select(cols).to_pandas()


def _asof_join(entity: pd.DataFrame, feats: pd.DataFrame) -> pd.DataFrame:
    """Join the latest feature row at or before each entity row, per (symbol, strategy)."""
    ts_col = f"ts_{STREAM_VIEW}"
    left = entity.reset_index(drop=True).copy()
    left["__row"] = np.arange(len(left))
    left["event_timestamp"] = pd.to_datetime(left["event_timestamp"], utc=True).astype(
        "datetime64[us, UTC]"
    )
    if feats.empty:
        for n in OWN_STREAM:
            left[n] = np.nan
        return left.drop(columns="__row")
    right = feats.rename(columns={ts_col: "__fts"}).copy()
    right["__fts"] = pd.to_datetime(right["__fts"], utc=True).astype("datetime64[us, UTC]")
    right["__ord"] = np.arange(len(right))
    right = right.sort_values(["__fts", "__ord"], kind="stable")
    left = left.sort_values("event_timestamp", kind="stable")
    joined = pd.merge_asof(
        left,
        right.drop(columns="__ord"),
        left_on="event_timestamp",
        right_on="__fts",
        by=["symbol", "strategy"],
        direction="backward",
        allow_exact_matches=True,
    )
    return joined.sort_values("__row").drop(columns=["__row", "__fts"]).reset_index(drop=True)


def join_stream_features(
    entity: pd.DataFrame,
    lake: str,
    settings: Settings,
    engine: PitEngine = "auto",
) -> tuple[pd.DataFrame, str]:
    """Return entity rows (symbol, strategy, event_timestamp) with point-in-time stream features.

    `feast` calls `TradeloopFeatureStore.historical` on a store whose offline lake is
    `lake`; `asof` runs the same join (latest row with timestamp <= the entity's,
    per symbol and strategy) with `pandas.merge_asof` over the dataset the Feast
    view reads; `auto` picks Feast unless its join would be too large.
    """
    feats = _feature_rows(lake, settings)
    chosen = _choose_engine(engine, len(entity), feats)
    if chosen == "asof":
        return _asof_join(entity, feats), "asof"
    from features.store import TradeloopFeatureStore

    lake_settings = (
        settings if lake == settings.lake else settings.model_copy(update={"lake_uri": lake})
    )
    store = TradeloopFeatureStore(lake_settings, repo_dir=_repo_dir(lake_settings, lake))
    try:
        store.apply()
        frame = store.historical(
            entity[["symbol", "strategy", "event_timestamp"]], list(STREAM_REFS)
        )
    finally:
        store.close()
    return frame, "feast"


def _repo_dir(settings: Settings, lake: str) -> str | None:
    """Return a private Feast repo directory for a lake other than the configured one."""
    if lake == settings.lake:
        return None  # the configured repo (FEAST_REPO_DIR or the package's)
    import hashlib

    tag = hashlib.sha256(lake.encode()).hexdigest()[:12]
    return str(settings.home / "training" / "feast" / tag)


def stream_wide(
    points: pd.DataFrame, lake: str, settings: Settings, engine: PitEngine = "auto"
) -> tuple[pd.DataFrame, str]:
    """Return one row per decision point (symbol, event_timestamp) with `{S}_{feature}` columns.

    Each value is every strategy's stream feature as of the point (0.0 before its
    first outcome). The as-of engine joins once per strategy; Feast joins the long
    entity frame (4 rows per point) and pivots.
    """
    pts = points.drop_duplicates().reset_index(drop=True)
    pts["event_timestamp"] = pd.to_datetime(pts["event_timestamp"], utc=True).astype(
        "datetime64[us, UTC]"
    )
    cols = [f"{s}_{n}" for s in STRATEGIES for n in OWN_STREAM]
    feats = _feature_rows(lake, settings)
    chosen = _choose_engine(engine, len(pts) * len(STRATEGIES), feats)
    if chosen == "feast":
        long, _ = join_stream_features(_entity_frame(pts), lake, settings, "feast")
        long["event_timestamp"] = pd.to_datetime(long["event_timestamp"], utc=True).astype(
            "datetime64[us, UTC]"
        )
        wide = long.pivot_table(
            index=["symbol", "event_timestamp"],
            columns="strategy",
            values=list(OWN_STREAM),
            aggfunc="last",
            dropna=False,
        )
        wide.columns = [f"{s}_{n}" for n, s in wide.columns]
        out = pts.merge(wide.reset_index(), on=["symbol", "event_timestamp"], how="left")
    else:
        out = pts.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
        ts_col = f"ts_{STREAM_VIEW}"
        right_all = feats.rename(columns={ts_col: "__fts"})
        right_all["__fts"] = pd.to_datetime(right_all["__fts"], utc=True).astype(
            "datetime64[us, UTC]"
        )
        for s in STRATEGIES:
            right = right_all[right_all["strategy"] == s].drop(columns="strategy")
            right = right.sort_values("__fts", kind="stable").rename(
                columns={n: f"{s}_{n}" for n in OWN_STREAM}
            )
            if right.empty:
                for n in OWN_STREAM:
                    out[f"{s}_{n}"] = np.nan
                continue
            out = pd.merge_asof(
                out,
                right,
                left_on="event_timestamp",
                right_on="__fts",
                by="symbol",
                direction="backward",
                allow_exact_matches=True,
            ).drop(columns="__fts")
    for c in cols:
        if c not in out.columns:
            out[c] = np.nan
    out[cols] = out[cols].astype("float64").fillna(0.0)
    return out[["symbol", "event_timestamp", *cols]], chosen


def _choose_engine(engine: PitEngine, entity_rows: int, feats: pd.DataFrame) -> str:
    if engine == "duckdb":
        return "asof"  # a frame in hand: the in-memory join DuckDB's equals
    if engine != "auto":
        return engine
    keys = max(1, feats.groupby(["symbol", "strategy"]).ngroups) if len(feats) else 1
    pairs = entity_rows * max(1, len(feats) // keys)
    return "feast" if pairs <= FEAST_MAX_PAIRS else "asof"


def _entity_frame(signals: pd.DataFrame) -> pd.DataFrame:
    """Return one entity row per (symbol, bar time, strategy) for every strategy."""
    points = signals[["symbol", "event_timestamp"]].drop_duplicates()
    strat = pd.DataFrame({"strategy": list(STRATEGIES)})
    return points.merge(strat, how="cross")[["symbol", "strategy", "event_timestamp"]]


def assemble(
    frames: LakeFrames,
    weight: float,
    source: str,
    engine: PitEngine = "auto",
) -> tuple[pd.DataFrame, str, dict[str, int]]:
    """Label one lake's signals, join stream features; return rows, engine, counts."""
    sig = frames.signals
    counts = {f"{frames.name}_signals": len(sig)}
    if sig.empty:
        return sig.assign(r_multiple=[]), "", counts
    out = frames.outcomes.rename(columns={"event_timestamp": "outcome_ts"})
    rows = sig.merge(out, left_on="event_id", right_on="signal_id", how="inner")
    counts[f"{frames.name}_without_outcome"] = len(sig) - len(rows)
    if rows.empty:
        return rows, "", counts
    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True).astype(
        "datetime64[us, UTC]"
    )
    rows["exit_ts"] = pd.to_datetime(rows["exit_ts"], utc=True).astype("datetime64[us, UTC]")
    wide, used = stream_wide(
        rows[["symbol", "event_timestamp"]], frames.lake, frames.settings, engine
    )
    rows = rows.merge(wide, on=["symbol", "event_timestamp"], how="left")
    # the signal's own strategy's values, picked from the wide columns
    strat_idx = rows["strategy"].map({s: i for i, s in enumerate(STRATEGIES)}).to_numpy()
    if np.isnan(strat_idx.astype(float)).any():
        unknown = sorted(set(rows.loc[pd.isna(strat_idx), "strategy"]))
        raise DataError(
            f"{frames.name}: signals of unknown strategies {unknown} (expected {list(STRATEGIES)})"
        )
    pick = np.arange(len(rows))
    for n in OWN_STREAM:
        block = rows[[f"{s}_{n}" for s in STRATEGIES]].to_numpy(dtype=np.float64)
        rows[n] = block[pick, strat_idx.astype(int)]
    rows["source_kind"] = source
    rows["weight"] = float(weight)
    return rows, used, counts


def _epoch_us(col: pd.Series) -> np.ndarray:
    """Return UTC timestamps as int64 microseconds since the epoch (no object arrays)."""
    return np.asarray(pd.DatetimeIndex(col).as_unit("us").asi8, dtype=np.int64)


def _finish(rows: pd.DataFrame) -> TrainingData:
    """Derive exec columns and meta groups from merged rows; check the data is usable."""
    market_nan = rows[list(FEATURE_NAMES)].isna().sum()
    bad = {k: int(v) for k, v in market_nan.items() if v}
    if bad:
        raise DataError(f"NaN market features in {sum(bad.values())} values: {bad}")
    for name in (*OWN_STREAM, *[c for c in META_FEATURE_NAMES if c not in FEATURE_NAMES]):
        rows[name] = rows[name].astype("float64").fillna(0.0)
    if not np.all(np.isfinite(rows["r_multiple"].to_numpy(dtype=np.float64))):
        raise DataError("outcomes carry NaN or infinite R-multiples")
    side = np.where(rows["side"].to_numpy() == "long", 1.0, -1.0)
    stop_d = np.abs(rows["entry"].to_numpy() - rows["stop"].to_numpy())
    atr = rows["atr_14"].to_numpy(dtype=np.float64)
    rows["side_num"] = side
    rows["stop_atr"] = np.where(atr > 0, stop_d / np.where(atr > 0, atr, 1.0), 0.0)
    rows["reward_risk"] = np.where(
        stop_d > 0,
        np.abs(rows["target"].to_numpy() - rows["entry"].to_numpy())
        / np.where(stop_d > 0, stop_d, 1.0),
        0.0,
    )
    rank = rows["strategy"].map({s: i for i, s in enumerate(STRATEGIES)}).to_numpy(dtype=np.int64)
    for i, s in enumerate(STRATEGIES):
        rows[f"is_{s}"] = (rank == i).astype("float64")
    # decision points: (source, run, symbol, bar); integer codes keep the sorts numeric
    src = pd.factorize(
        rows["source_kind"].astype(str)
        + "|"
        + rows["run_id"].astype(str)
        + "|"
        + rows["symbol"].astype(str)
    )[0]
    ts_ns = _epoch_us(rows["event_timestamp"])
    order = np.lexsort((src, ts_ns))
    rows = rows.iloc[order].reset_index(drop=True)
    ts_ns, src, rank = ts_ns[order], src[order], rank[order]
    new_group = np.r_[True, (ts_ns[1:] != ts_ns[:-1]) | (src[1:] != src[:-1])]
    group = np.cumsum(new_group) - 1
    exec_cols = rows.rename(columns={"side": "side_name"}).rename(columns={"side_num": "side"})
    exec_cols["group"] = group
    r = exec_cols["r_multiple"].to_numpy(dtype=np.float64)
    # the best candidate per group: highest R, ties to the first strategy in STRATEGIES
    by_best = np.lexsort((rank, -r, group))
    first = np.r_[True, group[by_best][1:] != group[by_best][:-1]]
    best_idx = by_best[first]
    exit_us = _epoch_us(exec_cols["exit_ts"])
    exit_max = np.maximum.reduceat(exit_us, np.flatnonzero(new_group))
    best = exec_cols.iloc[best_idx]
    groups = best[
        ["group", "event_timestamp", "symbol", "source_kind", "weight", *META_FEATURE_NAMES]
    ].reset_index(drop=True)
    groups["label"] = best["strategy"].to_numpy()
    groups["best_r"] = r[best_idx]
    groups["exit_ts"] = pd.to_datetime(exit_max[groups["group"].to_numpy()], unit="us", utc=True)
    # the wide columns live on in `groups`; `signal_id` equals `event_id` after the join
    signals = exec_cols.drop(columns=[*WIDE_COLUMNS, "signal_id"])
    missing = [c for c in EXEC_FEATURE_NAMES if c not in signals.columns]
    if missing:
        raise DataError(f"cannot build the exec vector: missing {missing}")
    return TrainingData(signals=signals, groups=groups)


def build_training_data(
    lakes: Sequence[tuple[str, LakeFrames]],
    cfg: TrainConfig,
    engine: PitEngine = "duckdb",
    duckdb_options: DuckDBOptions | None = None,
    executor: Executor | None = None,
) -> TrainingData:
    """Merge labelled rows of every source lake (with its weight) into one TrainingData.

    `lakes` pairs a source kind (`real`, `vendor`, `synthetic`) with its frames.
    `duckdb` builds the frames out of core (`training.pit_duckdb`); the others in
    pandas, with the same rows and values.
    Raise `DataError` on an empty window, NaN market features or a single meta class.
    """
    if engine == "duckdb":
        from training.pit_duckdb import DuckDBOptions, build_with_duckdb

        if duckdb_options is None and lakes:
            duckdb_options = DuckDBOptions.from_settings(lakes[0][1].settings)
        data = build_with_duckdb(lakes, cfg, duckdb_options)
        data.pit_engine = "duckdb"
    else:
        data = keep_recent(_build_in_memory(lakes, cfg, engine, executor), cfg.max_points)
    data.counts = {**data.counts, "signals": len(data.signals), "groups": len(data.groups)}
    for s in ("real", "vendor", "synthetic"):
        data.counts[f"rows_{s}"] = int((data.signals["source_kind"] == s).sum())
    if len(data.signals) < cfg.min_rows:
        raise DataError(
            f"only {len(data.signals)} signals with outcomes in the window (minimum {cfg.min_rows})"
        )
    labels = sorted(set(data.groups["label"]))
    if len(labels) < 2:
        raise DataError(f"meta labels have one class only ({labels}): nothing to choose between")
    return data


def _build_in_memory(
    lakes: Sequence[tuple[str, LakeFrames]],
    cfg: TrainConfig,
    engine: PitEngine,
    executor: Executor | None = None,
) -> TrainingData:
    """Join and label every lake in pandas (the `asof` and `feast` engines).

    Each lake is one shard, read and joined by an `executor` task (default: here).
    """
    from training.executor import LocalExecutor, is_shared, task_settings

    run = executor or LocalExecutor()
    parts: list[pd.DataFrame] = []
    counts: dict[str, int] = {}
    engines: set[str] = set()
    shards: list[tuple[bool, Any]] = []
    for source, frames in lakes:
        weight = cfg.weights.get(source, 0.0)
        if weight <= 0:
            counts[f"{frames.name}_skipped_weight0"] = len(frames.signals)
            continue
        # a lake on this machine's disk is joined here; one in the shared store by a task
        remote = run.name != "local" and is_shared(frames.lake)
        if remote:
            frames = replace(frames, settings=task_settings(frames.settings))
            shards.append((True, run.submit(assemble, frames, weight, source, engine)))
        else:
            shards.append((False, partial(assemble, frames, weight, source, engine)))
    done = iter(run.gather([task for remote, task in shards if remote]))
    for rows, used, c in [next(done) if remote else task() for remote, task in shards]:
        counts.update(c)
        if used:
            engines.add(used)
        if len(rows):
            parts.append(rows)
    if not parts:
        names = ", ".join(f"{s}={f.lake}" for s, f in lakes) or "none"
        raise DataError(f"empty training window: no signal with an outcome in any source ({names})")
    merged = pd.concat(parts, ignore_index=True)
    del parts
    data = _finish(merged)
    data.counts = counts
    data.pit_engine = "+".join(sorted(engines))
    return data


def source_counts(data: TrainingData) -> Mapping[str, int]:
    """Return the number of signal rows per source kind."""
    return data.signals["source_kind"].value_counts().to_dict()
