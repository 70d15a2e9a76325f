"""Training datasets: point-in-time joins (Feast and as-of), labels, sources, bad data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.vectors import EXEC_FEATURE_NAMES, META_FEATURE_NAMES
from infra.contracts import STRATEGIES
from infra.objectstore import LocalObjectStore
from infra.settings import Settings
from tests.helpers import unique_topic_prefix
from tests.kit.lake import synthetic_frames, write_frames
from training.config import DataError, TrainConfig, parse_weights
from training.datasets import (
    OWN_STREAM,
    _entity_frame,
    build_training_data,
    join_stream_features,
    load_lake,
    stream_wide,
)
from training.sources import collect_sources

CFG = TrainConfig.for_profile("small")


def _lake(tmp_path: Path, frames: dict[str, pd.DataFrame], name: str = "lake") -> str:
    root = tmp_path / name
    write_frames(LocalObjectStore(root), frames, payload=False)
    return str(root)


def _settings(tmp_path: Path, lake: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        LAKE_URI=lake,
        STORE_DIR=str(tmp_path / "store"),
        TOPIC_PREFIX=unique_topic_prefix("ds"),
        FEAST_REPO_DIR=str(tmp_path / "feast_repo"),  # a private Feast repo, not the package's
    )


def _stamps(frames: dict[str, pd.DataFrame]) -> dict[tuple[str, str, float], pd.Timestamp]:
    """Map (symbol, strategy, trade_count) of each feature row to its stamp."""
    f = frames["features"]
    return {
        (s, k, float(c)): pd.Timestamp(t)
        for s, k, c, t in zip(
            f["symbol"], f["strategy"], f["trade_count"], f["ts_strategy_stats"], strict=True
        )
    }


def _count_at_or_before(frames: dict[str, pd.DataFrame], rows: pd.DataFrame) -> np.ndarray:
    f = frames["features"]
    out = np.zeros(len(rows))
    for i, (sym, strat, ts) in enumerate(
        zip(rows["symbol"], rows["strategy"], rows["event_timestamp"], strict=True)
    ):
        m = (f["symbol"] == sym) & (f["strategy"] == strat) & (f["ts_strategy_stats"] <= ts)
        out[i] = float(m.sum())
    return out


def test_no_feature_value_stamped_after_a_signal_appears_in_its_row(tmp_path: Path) -> None:
    """Feast and the as-of join give identical point-in-time rows and never leak the future."""
    frames = synthetic_frames(400, seed=3)
    # several outcomes of one strategy can close in the same minute; Feast breaks such
    # ties arbitrarily, so this comparison keeps one feature row per (key, stamp)
    feats = frames["features"]
    frames["features"] = feats.drop_duplicates(
        ["symbol", "strategy", "ts_strategy_stats"], keep="last"
    )
    frames["features"] = frames["features"].assign(
        trade_count=frames["features"].groupby(["symbol", "strategy"]).cumcount() + 1.0
    )
    lake = _lake(tmp_path, frames)
    settings = _settings(tmp_path, lake)
    fr = load_lake("real", lake, settings)
    entity = _entity_frame(fr.signals)
    by_feast, used_f = join_stream_features(entity, lake, settings, "feast")
    by_asof, used_a = join_stream_features(entity, lake, settings, "asof")
    assert (used_f, used_a) == ("feast", "asof")
    key = ["symbol", "strategy", "event_timestamp"]
    a = by_feast.sort_values(key).reset_index(drop=True)
    b = by_asof.sort_values(key).reset_index(drop=True)
    for name in OWN_STREAM:
        np.testing.assert_allclose(
            a[name].fillna(-1).to_numpy(float), b[name].fillna(-1).to_numpy(float)
        )
    stamps = _stamps(frames)
    expected = _count_at_or_before(frames, b)
    got = b["trade_count"].fillna(0.0).to_numpy(float)
    np.testing.assert_array_equal(got, expected)  # the latest value at or before the signal
    for sym, strat, count, ts in zip(
        b["symbol"], b["strategy"], b["trade_count"], b["event_timestamp"], strict=True
    ):
        if not np.isnan(count):
            assert stamps[(sym, strat, float(count))] <= ts
    # the wide per-decision-point frames the trainers use agree too (pivot vs per-strategy join)
    points = fr.signals[["symbol", "event_timestamp"]]
    wide_f, _ = stream_wide(points, lake, settings, "feast")
    wide_a, _ = stream_wide(points, lake, settings, "asof")
    key2 = ["symbol", "event_timestamp"]
    wf = wide_f.sort_values(key2).reset_index(drop=True)
    wa = wide_a.sort_values(key2).reset_index(drop=True)
    assert list(wf.columns) == list(wa.columns) and len(wf) == len(wa)
    np.testing.assert_allclose(wf.iloc[:, 2:].to_numpy(float), wa.iloc[:, 2:].to_numpy(float))
    # some rows must have had later values available, or the test proves nothing
    latest = frames["features"].groupby(["symbol", "strategy"])["trade_count"].max()
    assert (
        got < b.set_index(["symbol", "strategy"]).index.map(latest).to_numpy(float)
    ).mean() > 0.5


@pytest.mark.parametrize("engine", ["asof", "duckdb"])
def test_training_rows_carry_only_past_stream_values_with_ties(tmp_path: Path, engine: str) -> None:
    """In the assembled frames, own and cross-strategy stream values are as of the signal."""
    frames = synthetic_frames(600, seed=5)
    lake = _lake(tmp_path, frames)
    settings = _settings(tmp_path, lake)
    data = build_training_data([("real", load_lake("real", lake, settings))], CFG, engine)  # type: ignore[arg-type]
    assert data.pit_engine == engine
    s = data.signals
    np.testing.assert_array_equal(s["trade_count"].to_numpy(float), _count_at_or_before(frames, s))
    stamps = _stamps(frames)
    for sym, strat, count, ts in zip(
        s["symbol"], s["strategy"], s["trade_count"], s["event_timestamp"], strict=True
    ):
        if count > 0:
            assert stamps[(sym, strat, float(count))] <= ts
    # the meta columns of each decision point are the same as-of values, per strategy
    f = frames["features"].sort_values("ts_strategy_stats", kind="stable")
    g = data.groups.sample(40, random_state=1)
    for _, row in g.iterrows():
        for strat in STRATEGIES:
            past = f[
                (f["symbol"] == row["symbol"])
                & (f["strategy"] == strat)
                & (f["ts_strategy_stats"] <= row["event_timestamp"])
            ]
            want = float(past["win_rate"].iloc[-1]) if len(past) else 0.0
            assert row[f"{strat}_win_rate"] == pytest.approx(want)
    assert list(META_FEATURE_NAMES) == [c for c in META_FEATURE_NAMES if c in data.groups.columns]
    assert data.exec_matrix().shape == (len(s), len(EXEC_FEATURE_NAMES))


def test_meta_label_is_the_best_r_among_a_bars_candidates(tmp_path: Path) -> None:
    frames = synthetic_frames(500, seed=9)
    lake = _lake(tmp_path, frames)
    settings = _settings(tmp_path, lake)
    data = build_training_data([("real", load_lake("real", lake, settings))], CFG, "asof")
    s = data.signals
    assert len(data.groups) == s.groupby(["symbol", "event_timestamp"]).ngroups
    for gid, rows in s.groupby("group"):
        best = rows["r_multiple"].max()
        winners = [
            st
            for st in STRATEGIES
            if ((rows["strategy"] == st) & (rows["r_multiple"] == best)).any()
        ]
        label = data.groups.loc[data.groups["group"] == gid, "label"].item()
        assert label == winners[0]
    # counterfactual outcomes are labels too: most bars have a non-taken candidate
    assert (~frames["outcomes"]["counterfactual"]).sum() < len(frames["outcomes"])
    # stop and reward/risk come from the snapshot prices and its ATR, as in the trader
    row = s.iloc[0]
    assert row["stop_atr"] == pytest.approx(abs(row["entry"] - row["stop"]) / row["atr_14"])
    assert row["reward_risk"] == pytest.approx(
        abs(row["target"] - row["entry"]) / abs(row["entry"] - row["stop"])
    )


def test_bad_data_ends_with_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    settings = _settings(tmp_path, str(empty))
    with pytest.raises(DataError, match="empty training window"):
        build_training_data([("real", load_lake("real", str(empty), settings))], CFG)

    one = synthetic_frames(300, seed=1, strategies=("S2",))
    lake = _lake(tmp_path, one, "one")
    with pytest.raises(DataError, match="one class"):
        build_training_data([("real", load_lake("real", lake, settings))], CFG, "asof")

    nan = synthetic_frames(300, seed=2)
    nan["signals"].loc[5, "rsi_14"] = np.nan
    lake = _lake(tmp_path, nan, "nan")
    with pytest.raises(DataError, match=r"NaN market features.*rsi_14"):
        build_training_data([("real", load_lake("real", lake, settings))], CFG, "asof")

    few = synthetic_frames(30, seed=2)
    lake = _lake(tmp_path, few, "few")
    with pytest.raises(DataError, match=r"only \d+ signals with outcomes"):
        build_training_data([("real", load_lake("real", lake, settings))], CFG, "asof")


def test_signals_without_outcomes_are_left_out_and_counted(tmp_path: Path) -> None:
    frames = synthetic_frames(300, seed=4)
    frames["outcomes"] = frames["outcomes"].iloc[:-40]
    lake = _lake(tmp_path, frames)
    settings = _settings(tmp_path, lake)
    data = build_training_data([("real", load_lake("real", lake, settings))], CFG, "asof")
    assert data.counts["real_without_outcome"] == 40
    assert len(data.signals) == 260


def test_sources_merge_with_their_weights(tmp_path: Path) -> None:
    real = _lake(tmp_path, synthetic_frames(300, seed=1), "real")
    vend = _lake(tmp_path, synthetic_frames(200, seed=2, source="vendor"), "vendor")
    settings = _settings(tmp_path, real)
    cfg = TrainConfig.for_profile("small", weights=parse_weights("real:1,vendor:0.5,synthetic:0"))
    lakes = [
        ("real", load_lake("real", real, settings)),
        ("vendor", load_lake("vendor", vend, settings)),
    ]
    data = build_training_data(lakes, cfg, "asof")
    w = data.signals.groupby("source_kind")["weight"].unique().to_dict()
    assert {k: list(v) for k, v in w.items()} == {"real": [1.0], "vendor": [0.5]}
    assert data.counts["rows_real"] == 300 and data.counts["rows_vendor"] == 200
    with pytest.raises(ValueError, match="expected one of"):
        parse_weights("bogus:1")


def _vendor_csv(path: Path, days: int = 6) -> Path:
    rng = np.random.default_rng(11)
    rows = []
    price = 5000.0
    day = dt.date(2024, 3, 4)
    while days:
        if day.weekday() < 5:
            t0 = dt.datetime(day.year, day.month, day.day, 14, 31, tzinfo=dt.UTC)
            for i in range(390):
                o = price
                c = max(1.0, o + rng.normal(0, 1.5))
                h, lo = max(o, c) + abs(rng.normal(0, 0.75)), min(o, c) - abs(rng.normal(0, 0.75))
                rows.append(
                    (t0 + dt.timedelta(minutes=i), "ES", o, h, lo, c, int(rng.integers(100, 5000)))
                )
                price = c
            days -= 1
        day += dt.timedelta(days=1)
    frame = pd.DataFrame(
        rows, columns=["timestamp", "symbol", "open", "high", "low", "close", "volume"]
    )
    frame["timestamp"] = frame["timestamp"].map(lambda t: t.isoformat())
    frame.to_csv(path, index=False)
    return path


def test_vendor_and_synthetic_bars_go_through_the_trader_backtest(tmp_path: Path) -> None:
    """`tradeloop backtest` (a subprocess) turns bars into signals and outcomes with stream features."""
    settings = _settings(tmp_path, str(tmp_path / "real"))
    csv = _vendor_csv(tmp_path / "vendor.csv")
    lakes = collect_sources(
        settings,
        tmp_path / "work",
        symbols=["ES"],
        vendor_paths=[str(csv)],
        synthetic_bars=2500,
        include_real=False,
    )
    assert [k for k, _ in lakes] == ["vendor", "synthetic"]
    for kind, frames in lakes:
        assert len(frames.signals) > 0, kind
        assert set(frames.signals["source"]) == {kind}
        assert frames.signals["event_id"].isin(frames.outcomes["signal_id"]).all()
    cfg = TrainConfig.for_profile("small", min_rows=10)
    data = build_training_data(lakes, cfg, "asof")
    assert data.counts["rows_vendor"] > 0 and data.counts["rows_synthetic"] > 0
    # stream features were folded from each source's own outcomes: later signals see them
    assert (data.signals["trade_count"] > 0).any()
    s = data.signals
    assert (
        s["trade_count"]
        <= s.groupby(["source_kind", "symbol", "strategy"]).cumcount() + s["trade_count"].max()
    ).all()
