"""The out-of-core DuckDB dataset engine gives the in-memory as-of path's frames exactly."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from infra.objectstore import LocalObjectStore, store_for_uri
from infra.settings import Settings
from tests.helpers import unique_topic_prefix
from tests.kit.lake import synthetic_frames, write_frames
from training.config import DataError, TrainConfig, parse_weights
from training.datasets import TrainingData, build_training_data, load_lake
from training.frames import LakeFrames
from training.pit_duckdb import DuckDBOptions

CFG = TrainConfig.for_profile("small")


def _settings(tmp_path: Path, lake: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        LAKE_URI=lake, STORE_DIR=str(tmp_path / "store"), TOPIC_PREFIX=unique_topic_prefix("pit")
    )


def _rewritten(frames: dict[str, pd.DataFrame], seed: int) -> dict[str, pd.DataFrame]:
    """Return frames with the lake's untidy corners: re-sent rows, a gap, NaN and ties."""
    rng = np.random.default_rng(seed)
    out = {k: v.copy() for k, v in frames.items()}
    sig, res, feat = out["signals"], out["outcomes"], out["features"]
    # re-sent signals and outcomes with changed values: the later copy must win
    again = sig.sample(12, random_state=seed).assign(entry=lambda f: f["entry"] + 1.25)
    # a signal whose outcome is not in the lake yet, and a feature update with NaN values
    res = res[~res["signal_id"].isin(sig["event_id"].iloc[[5, 17, 40]])]
    redo = res.sample(9, random_state=seed + 1).assign(r_multiple=lambda f: -f["r_multiple"])
    feat.loc[feat.index[rng.choice(len(feat), 6, replace=False)], "win_rate"] = np.nan
    out["signals"] = pd.concat([sig, again], ignore_index=True)
    out["outcomes"] = pd.concat([res, redo], ignore_index=True)
    out["features"] = feat
    return out


def _both(
    lakes: list[tuple[str, LakeFrames]], cfg: TrainConfig = CFG, **kw: object
) -> tuple[TrainingData, TrainingData]:
    mem = build_training_data(lakes, cfg, "asof")
    ooc = build_training_data(lakes, cfg, "duckdb", **kw)  # type: ignore[arg-type]
    return mem, ooc


def _assert_same(mem: TrainingData, ooc: TrainingData) -> None:
    pd.testing.assert_frame_equal(ooc.signals, mem.signals, check_exact=True)
    pd.testing.assert_frame_equal(ooc.groups, mem.groups, check_exact=True)
    assert ooc.counts == mem.counts
    assert (mem.pit_engine, ooc.pit_engine) == ("asof", "duckdb")


def test_duckdb_frames_equal_the_in_memory_join_row_for_row(tmp_path: Path) -> None:
    """Two weighted sources, a zero-weight one, re-sent rows, a gap, NaN and tied stamps."""
    real = tmp_path / "real"
    vendor = tmp_path / "vendor"
    synth = tmp_path / "synth"
    write_frames(
        LocalObjectStore(real), _rewritten(synthetic_frames(600, seed=4), 4), payload=False
    )
    write_frames(
        LocalObjectStore(vendor),
        _rewritten(synthetic_frames(300, seed=8, source="vendor"), 8),
        payload=False,
    )
    write_frames(LocalObjectStore(synth), synthetic_frames(150, seed=9), payload=False)
    settings = _settings(tmp_path, str(real))
    cfg = dataclasses.replace(CFG, weights=parse_weights("real:1,vendor:0.5,synthetic:0"))
    lakes = [
        ("real", load_lake("real", str(real), settings)),
        ("vendor", load_lake("vendor0", str(vendor), settings)),
        ("synthetic", load_lake("synthetic", str(synth), settings)),
    ]
    mem, ooc = _both(lakes, cfg)
    _assert_same(mem, ooc)
    # the untidy corners were there to be handled
    assert ooc.counts["real_without_outcome"] == 3 and ooc.counts["synthetic_skipped_weight0"] > 0
    s = ooc.signals
    assert s["event_id"].is_unique and set(s["source_kind"]) == {"real", "vendor"}
    assert (s["win_rate"] == 0.0).any() and not s["win_rate"].isna().any()
    # a window and one symbol: the same filters in both engines
    ts = mem.signals["event_timestamp"]
    lo, hi = ts.quantile(0.2).to_pydatetime(), ts.quantile(0.8).to_pydatetime()
    part = [("real", load_lake("real", str(real), settings, lo, hi, ["NQ"]))]
    mem, ooc = _both(part)
    _assert_same(mem, ooc)
    assert set(ooc.signals["symbol"]) == {"NQ"} and len(ooc.signals) < len(s)


def test_duckdb_reads_an_s3_lake_in_64_mb(make_settings) -> None:  # type: ignore[no-untyped-def]
    """An S3 lake (moto) read through a local spool, DuckDB held to 64 MB."""
    settings = make_settings(s3=True)
    frames = synthetic_frames(1500, seed=12)
    write_frames(store_for_uri(settings.lake, settings), frames, payload=False)
    lakes = [("real", load_lake("real", settings.lake, settings))]
    spill = settings.home / "spill"
    mem, ooc = _both(lakes, duckdb_options=DuckDBOptions(memory_mb=64, temp_dir=str(spill)))
    _assert_same(mem, ooc)
    assert len(ooc.signals) == len(frames["signals"])
    assert spill.is_dir() and not any(spill.iterdir())  # its work directory is removed


def test_duckdb_refuses_bad_data_with_the_same_errors(tmp_path: Path) -> None:
    frames = synthetic_frames(400, seed=6)
    bad = {k: v.copy() for k, v in frames.items()}
    bad["signals"].loc[bad["signals"].index[:4], "rsi_14"] = np.nan
    odd = {k: v.copy() for k, v in frames.items()}
    odd["signals"].loc[odd["signals"].index[:2], "strategy"] = "S99"
    for name, f in (("nan", bad), ("odd", odd)):
        root = tmp_path / name
        write_frames(LocalObjectStore(root), f, payload=False)
        settings = _settings(tmp_path, str(root))
        errors = []
        for engine in ("asof", "duckdb"):
            with pytest.raises(DataError) as exc:
                build_training_data([("real", load_lake("real", str(root), settings))], CFG, engine)  # type: ignore[arg-type]
            errors.append(str(exc.value))
        assert errors[0] == errors[1], name
        assert ("rsi_14" in errors[0]) if name == "nan" else ("S99" in errors[0])
    # an empty window
    root = tmp_path / "nan"
    late = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    settings = _settings(tmp_path, str(root))
    with pytest.raises(DataError, match="empty training window"):
        build_training_data([("real", load_lake("real", str(root), settings, late))], CFG, "duckdb")


def test_the_engine_is_a_setting_and_duckdb_is_the_default(tmp_path: Path) -> None:
    assert Settings().train_pit_engine == "duckdb"  # type: ignore[call-arg]
    root = tmp_path / "lake"
    write_frames(LocalObjectStore(root), synthetic_frames(300, seed=2), payload=False)
    settings = _settings(tmp_path, str(root)).model_copy(update={"train_pit_engine": "asof"})
    from training.tune import load_data

    assert load_data(settings, CFG).pit_engine == "asof"
