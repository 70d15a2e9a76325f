"""A synthetic event lake with learnable structure, for tests and benchmarks.

`write_synthetic_lake` writes `signals`, `outcomes` and `features` (the
`strategy_stats` view) parquet files in the lake layout of DESIGN.md, with the
columns of `infra.lake.schema_for`. Each bar of each symbol has 0-3 candidate
signals; every candidate gets an outcome (the one the rules would take is real,
the others counterfactual) whose R-multiple depends on one market feature per
strategy, so a classifier, a regressor and a sizer all have something to learn.
Stream features are stamped at each outcome's exit time with the values the streams
worker's `features.stream.StreamFeatureState` folds (a parity test holds the two
together), so point-in-time joins have something to get wrong.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.stream import EWM_FADING, WINDOW_TRADES
from infra.contracts import FEATURE_NAMES, STRATEGIES
from infra.lake import lake_key, schema_for
from infra.objectstore import ObjectStore

__all__ = ["SyntheticLake", "synthetic_frames", "write_synthetic_lake"]

#: The market feature that drives each strategy's R-multiple.
DRIVERS: dict[str, str] = {"S2": "ema_slope", "S3": "rsi_14", "S6": "volume_z_30", "S11": "ret_15"}
START = dt.datetime(2025, 1, 6, 14, 30, tzinfo=dt.UTC)
_CAND_P = np.array([0.3, 0.35, 0.25, 0.1])  # 0..3 candidates per bar
_MEAN_CANDS = float(np.dot(np.arange(4), _CAND_P))


@dataclass(frozen=True)
class SyntheticLake:
    """What was written: row counts and the event-time window."""

    signals: int
    outcomes: int
    features: int
    start: dt.datetime
    end: dt.datetime


def synthetic_frames(
    n_signals: int,
    *,
    symbols: tuple[str, ...] = ("ES", "NQ"),
    seed: int = 0,
    source: str = "live",
    start: dt.datetime = START,
    strategies: tuple[str, ...] = STRATEGIES,
) -> dict[str, pd.DataFrame]:
    """Return the signals, outcomes and features frames (lake columns, no payload)."""
    rng = np.random.default_rng(seed)
    n_bars = max(2, int(np.ceil(n_signals / _MEAN_CANDS * 1.15 / len(symbols))))
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}
    market = rng.normal(size=(len(symbols), n_bars, len(FEATURE_NAMES)))
    market[..., col["atr_14"]] = rng.uniform(2.0, 8.0, (len(symbols), n_bars))
    market[..., col["atr_pct"]] = market[..., col["atr_14"]] / 5000.0
    market[..., col["rsi_14"]] = rng.uniform(10, 90, (len(symbols), n_bars))
    market[..., col["session_rth"]] = 1.0
    market[..., col["session_open_30"]] = (rng.random((len(symbols), n_bars)) < 0.1).astype(float)

    def driver(values: np.ndarray, s: str) -> np.ndarray:
        v = values[..., col[DRIVERS[s]]]
        return (v - 50.0) / 20.0 if DRIVERS[s] == "rsi_14" else v

    parts = []
    for si in range(len(symbols)):
        k = np.minimum(rng.choice(4, size=n_bars, p=_CAND_P), len(strategies))
        bar_idx = np.repeat(np.arange(n_bars), k)
        # strategies fire when their condition is strong: the k with the largest noisy driver
        score = np.column_stack([driver(market[si], s) for s in strategies])
        perm = np.argsort(-(score + rng.normal(0, 1.0, score.shape)), axis=1)
        offs = np.concatenate([np.arange(c) for c in k]) if len(bar_idx) else np.zeros(0, int)
        strat_idx = perm[bar_idx, offs]
        parts.append(pd.DataFrame({"bar": bar_idx, "sym": si, "strat": strat_idx}))
    sig = pd.concat(parts, ignore_index=True).sort_values(["bar", "sym", "strat"], kind="stable")
    sig = sig.iloc[:n_signals].reset_index(drop=True)
    n = len(sig)
    bar_keys = sig["bar"].to_numpy() * len(symbols) + sig["sym"].to_numpy()
    x = market[sig["sym"].to_numpy(), sig["bar"].to_numpy()]
    ts = start + pd.to_timedelta(sig["bar"].to_numpy() * 60, unit="s")
    side = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    strat = np.array(strategies)[sig["strat"].to_numpy()]
    drive = np.empty(n)
    for s in strategies:
        m = strat == s
        drive[m] = driver(x[m], s)
    r = 1.5 * np.tanh(drive + 0.4 * side * x[:, col["ema_spread"]]) + rng.normal(0, 0.5, n)
    r = np.clip(r, -1.3, 3.0)
    atr = x[:, col["atr_14"]]
    entry = np.where(sig["sym"].to_numpy() == 0, 5000.0, 18000.0) + rng.normal(0, 5, n)
    stop_d = atr * rng.choice([1.25, 1.5, 2.0], n)
    stop = entry - side * stop_d
    target = entry + side * stop_d * rng.choice([1.2, 1.67, 2.0], n)
    hold_bars = rng.integers(3, 60, n)
    exit_ts = ts + pd.to_timedelta(hold_bars * 60, unit="s")
    sym_arr = np.array(symbols)[sig["sym"].to_numpy()]
    ids = [uuid.UUID(int=int(v)).hex for v in rng.integers(0, 2**63, n, dtype=np.int64)]
    run_id = f"synth{seed}"
    # the first candidate of each bar is the one the rules "took"; the rest are counterfactual
    first = np.r_[True, bar_keys[1:] != bar_keys[:-1]]
    signals = pd.DataFrame(
        {
            "event_id": ids,
            "schema": "signal_snapshot/1",
            "event_timestamp": ts,
            "ts_init": ts,
            "symbol": sym_arr,
            "strategy": strat,
            "side": np.where(side > 0, "long", "short"),
            "entry": entry,
            "stop": stop,
            "target": target,
            "source": source,
            "run_id": run_id,
            "decision_path": "rules",
            "taken": first,
            "decision_reason": np.where(first, "rules", "not_chosen"),
            "chosen_strategy": strat,
            "size_multiplier": 1.0,
            "contracts": np.where(first, 1, 0),
            "variant": "champion",
            "candidates": "[]",
            "model_versions": "{}",
        }
    )
    for name, i in col.items():
        signals[name] = x[:, i]
    outcomes = pd.DataFrame(
        {
            "event_id": [uuid.uuid5(uuid.NAMESPACE_OID, i).hex for i in ids],
            "schema": "trade_outcome/1",
            "event_timestamp": exit_ts,
            "ts_init": exit_ts,
            "symbol": sym_arr,
            "signal_id": ids,
            "strategy": strat,
            "side": signals["side"],
            "entry_ts": ts,
            "entry_price": entry,
            "exit_ts": exit_ts,
            "exit_price": entry + side * r * stop_d,
            "quantity": 1,
            "pnl_usd": r * 500.0,
            "r_multiple": r,
            "mae_r": -np.abs(rng.normal(0, 0.5, n)),
            "mfe_r": np.abs(rng.normal(0, 1.0, n)) + np.maximum(r, 0),
            "commission_usd": 4.5,
            "exit_reason": np.where(r > 0, "target", "stop"),
            "counterfactual": ~first,
            "source": source,
            "run_id": run_id,
            "model_versions": "{}",
        }
    )
    features = _strategy_stats(outcomes)
    return {"signals": signals, "outcomes": outcomes, "features": features}


def _strategy_stats(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Return `strategy_stats` feature rows stamped at each outcome's exit time.

    Vectorised (a million outcomes take seconds); the values equal what
    `StreamFeatureState` folds for the outcomes in (exit_ts, signal_id) order: a
    rolling mean over `WINDOW_TRADES`, a recursive EWM seeded with the first value,
    and the drawdown of cumulative R from a peak that starts at zero.
    """
    o = outcomes.sort_values(["exit_ts", "signal_id"], kind="stable")
    keys = [o["symbol"], o["strategy"]]
    g = o.groupby(["symbol", "strategy"], sort=False)
    win = (o["r_multiple"] > 0).astype(float)
    cum = g["r_multiple"].cumsum()
    peak = cum.groupby(keys).cummax().clip(lower=0.0)
    out = pd.DataFrame(
        {
            "event_id": [uuid.uuid5(uuid.NAMESPACE_URL, i).hex for i in o["event_id"]],
            "schema": "feature_update/1",
            "event_timestamp": o["exit_ts"].to_numpy(),
            "ts_init": o["exit_ts"].to_numpy(),
            "symbol": o["symbol"].to_numpy(),
            "feature_view": "strategy_stats",
            "strategy": o["strategy"].to_numpy(),
            "win_rate": win.groupby(keys)
            .transform(lambda s: s.rolling(WINDOW_TRADES, min_periods=1).mean())
            .to_numpy(),
            "mean_r": g["r_multiple"]
            .transform(lambda s: s.rolling(WINDOW_TRADES, min_periods=1).mean())
            .to_numpy(),
            "ewm_r": g["r_multiple"]
            .transform(lambda s: s.ewm(alpha=EWM_FADING, adjust=False).mean())
            .to_numpy(),
            "drawdown_r": (peak - cum).to_numpy(),
            "trade_count": (g.cumcount() + 1).astype(float).to_numpy(),
            "ts_strategy_stats": o["exit_ts"].to_numpy(),
        }
    )
    return out.reset_index(drop=True)


def _payloads(topic: str, frame: pd.DataFrame) -> list[str]:
    """Build each row's wire JSON (the event as the trader would have encoded it)."""
    from infra.contracts import FeatureUpdate, SignalSnapshot, TradeOutcome, encode

    out: list[str] = []
    recs = frame.to_dict("records")
    for rec in recs:
        if topic == "signals":
            ev: object = SignalSnapshot(
                event_id=rec["event_id"],
                ts_event=rec["event_timestamp"].to_pydatetime(),
                symbol=rec["symbol"],
                strategy=rec["strategy"],
                side=rec["side"],
                entry=rec["entry"],
                stop=rec["stop"],
                target=rec["target"],
                feature_names=FEATURE_NAMES,
                features=tuple(float(rec[n]) for n in FEATURE_NAMES),
                decision={
                    "path": "rules",
                    "taken": bool(rec["taken"]),
                    "reason": rec["decision_reason"],
                },
                source=rec["source"],
                run_id=rec["run_id"],
            )
        elif topic == "outcomes":
            ev = TradeOutcome(
                event_id=rec["event_id"],
                ts_event=rec["event_timestamp"].to_pydatetime(),
                **{
                    k: (rec[k].to_pydatetime() if k.endswith("_ts") else rec[k])
                    for k in (
                        "signal_id", "symbol", "strategy", "side", "entry_ts", "entry_price",
                        "exit_ts", "exit_price", "quantity", "pnl_usd", "r_multiple", "mae_r",
                        "mfe_r", "commission_usd", "exit_reason", "counterfactual", "source", "run_id",
                    )
                },
            )  # fmt: skip
        else:
            ev = FeatureUpdate(
                event_id=rec["event_id"],
                ts_event=rec["event_timestamp"].to_pydatetime(),
                feature_view="strategy_stats",
                symbol=rec["symbol"],
                strategy=rec["strategy"],
                values={
                    k: float(rec[k])
                    for k in ("win_rate", "mean_r", "ewm_r", "drawdown_r", "trade_count")
                },
            )
        out.append(encode(ev).decode())  # type: ignore[arg-type]
    return out


def frame_to_table(topic: str, frame: pd.DataFrame, payload: bool) -> pa.Table:
    """Return a frame as a table with the lake schema of a topic (absent columns null)."""
    schema = schema_for(topic)
    n = len(frame)
    arrays = []
    for fld in schema:
        if fld.name == "payload":
            values = _payloads(topic, frame) if payload else [""] * n
            arrays.append(pa.array(values, type=fld.type))
        elif fld.name in frame.columns:
            arrays.append(pa.array(frame[fld.name], type=fld.type, from_pandas=True))
        else:
            arrays.append(pa.nulls(n, type=fld.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_frames(
    store: ObjectStore, frames: Mapping[str, pd.DataFrame], *, payload: bool = True
) -> dict[str, int]:
    """Write topic frames into a lake store, one file per (topic, date, symbol)."""
    counts: dict[str, int] = {}
    for topic, frame in frames.items():
        f = frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
        f["date"] = pd.DatetimeIndex(f["event_timestamp"]).strftime("%Y-%m-%d")
        symbols = sorted(f["symbol"].unique())
        for p, sym in enumerate(symbols):
            part = f[f["symbol"] == sym].reset_index(drop=True)
            part["kafka_partition"] = p
            part["kafka_offset"] = np.arange(len(part), dtype=np.int64)
            for day, rows in part.groupby("date", sort=True):
                table = frame_to_table(topic, rows, payload)
                buf = io.BytesIO()
                pq.write_table(table, buf, compression="zstd")
                first, last = int(rows["kafka_offset"].min()), int(rows["kafka_offset"].max())
                store.put(lake_key(topic, str(day), str(sym), p, first, last), buf.getvalue())
        counts[topic] = len(f)
    return counts


def write_synthetic_lake(
    store: ObjectStore,
    n_signals: int,
    *,
    seed: int = 0,
    source: str = "live",
    symbols: tuple[str, ...] = ("ES", "NQ"),
    payload: bool = True,
    strategies: tuple[str, ...] = STRATEGIES,
) -> SyntheticLake:
    """Write a synthetic lake of about `n_signals` signals; return what was written."""
    frames = synthetic_frames(
        n_signals, symbols=symbols, seed=seed, source=source, strategies=strategies
    )
    counts = write_frames(store, frames, payload=payload)
    ts = frames["signals"]["event_timestamp"]
    return SyntheticLake(
        signals=counts["signals"],
        outcomes=counts["outcomes"],
        features=counts["features"],
        start=pd.Timestamp(ts.min()).to_pydatetime(),
        end=pd.Timestamp(frames["outcomes"]["exit_ts"].max()).to_pydatetime(),
    )
