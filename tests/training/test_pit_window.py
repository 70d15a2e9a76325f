"""The bounded training frames (`TrainConfig.max_points`) are the tail of the full ones."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra.objectstore import LocalObjectStore
from infra.settings import Settings
from tests.helpers import unique_topic_prefix
from tests.kit.lake import synthetic_frames, write_frames
from training.config import TrainConfig
from training.datasets import TrainingData, build_training_data, load_lake
from training.pit_duckdb import _read_frame

CFG = TrainConfig.for_profile("small")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Settings]:
    root = tmp_path_factory.mktemp("window") / "lake"
    write_frames(LocalObjectStore(root), synthetic_frames(900, seed=21), payload=False)
    settings = Settings(  # type: ignore[call-arg]
        LAKE_URI=str(root),
        STORE_DIR=str(root.parent / "store"),
        TOPIC_PREFIX=unique_topic_prefix("pitwin"),
    )
    return str(root), settings


def _build(lake: tuple[str, Settings], engine: str, max_points: int | None) -> TrainingData:
    root, settings = lake
    cfg = dataclasses.replace(CFG, max_points=max_points)
    return build_training_data([("real", load_lake("real", root, settings))], cfg, engine)  # type: ignore[arg-type]


@pytest.mark.parametrize("engine", ["duckdb", "asof"])
def test_bounded_frames_are_the_tail_of_the_full_ones(
    lake: tuple[str, Settings], engine: str
) -> None:
    full = _build(lake, engine, None)
    keep = len(full.groups) // 3
    part = _build(lake, engine, keep)
    tail_g = full.groups.iloc[-keep:].reset_index(drop=True)
    first = int(tail_g["group"].iloc[0])
    tail_s = full.signals[full.signals["group"] >= first].reset_index(drop=True)
    pd.testing.assert_frame_equal(part.groups, tail_g, check_exact=True)
    pd.testing.assert_frame_equal(part.signals, tail_s, check_exact=True)
    assert 0 < len(tail_s) < len(full.signals)
    assert part.counts["points_before_window"] == len(full.groups) - keep
    assert part.counts["signals_before_window"] == len(full.signals) - len(tail_s)
    assert (part.counts["groups"], part.counts["signals"]) == (keep, len(tail_s))
    # a window at least as large as the data changes nothing
    same = _build(lake, engine, len(full.groups))
    pd.testing.assert_frame_equal(same.signals, full.signals, check_exact=True)
    pd.testing.assert_frame_equal(same.groups, full.groups, check_exact=True)
    assert same.counts == full.counts and "points_before_window" not in same.counts


def test_both_engines_bound_the_same_rows(lake: tuple[str, Settings]) -> None:
    mem, ooc = _build(lake, "asof", 150), _build(lake, "duckdb", 150)
    pd.testing.assert_frame_equal(ooc.signals, mem.signals, check_exact=True)
    pd.testing.assert_frame_equal(ooc.groups, mem.groups, check_exact=True)
    assert ooc.counts == mem.counts and len(ooc.groups) == 150


def test_the_hand_over_file_reads_back_as_one_concat_of_its_batches(tmp_path: Path) -> None:
    """Nulls after the first batch, NaT, strings, bools, empty: the dtypes `pd.concat` gives."""
    ts = pa.timestamp("us", tz="Europe/Berlin")
    table = pa.table(
        {
            "i": pa.array([1, 2, 3, None, 5], pa.int64()),
            "f": pa.array([0.5, None, 2.5, 3.5, 4.5], pa.float64()),
            "b": pa.array([True, False, True, True, False]),
            "s": pa.array(["a", "b", None, "a", "c"]),
            "t": pa.array([0, 1_000_000, None, 3, 4], ts),
            "u": pa.array([10, 20, 30, 40, 50], ts),
        }
    )
    path = tmp_path / "f.parquet"
    pq.write_table(table, path)
    want = pd.concat(
        [b.to_pandas() for b in pq.ParquetFile(path).iter_batches(batch_size=2)], ignore_index=True
    )
    for c in ("t", "u"):
        want[c] = want[c].dt.tz_convert("UTC")
    pd.testing.assert_frame_equal(_read_frame(path, 2), want, check_exact=True)
    pq.write_table(table.slice(0, 0), path)
    got = _read_frame(path, 2)
    assert len(got) == 0 and list(got.columns) == list(table.column_names)
    assert str(got["u"].dtype) == "datetime64[us, UTC]"


def test_a_training_run_fits_on_the_bounded_frames(lake: tuple[str, Settings]) -> None:
    """The walk-forward folds cut the kept rows; decision points keep their numbers."""
    from training.pipeline import fit_all

    part = _build(lake, "duckdb", 300)
    assert int(part.groups["group"].iloc[0]) == part.counts["points_before_window"] > 0
    trained = fit_all(part, dataclasses.replace(CFG, max_points=300))
    first = part.groups["event_timestamp"].iloc[0]
    assert trained.holdout_start > first.to_pydatetime()
    assert trained.holdout_groups is not None and 0 < len(trained.holdout_groups) < 300
    assert trained.meta.holdout_metrics["rows"] == len(trained.holdout_groups)
