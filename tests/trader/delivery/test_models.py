"""Scorers: IOBinding-scored rows equal onnxruntime's own run, in place, across swaps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bench.bench_decision import build_models
from trader.core.decision import Decider
from trader.core.stream_cache import StreamCache
from trader.delivery.models import ModelHolder, ModelSet, Scorer


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    build_models(out, small=True, seed=5)
    return out


@pytest.mark.parametrize("family", ["meta", "exec", "sizer"])
def test_a_scorer_reads_its_row_in_place_and_equals_session_run(
    models_dir: Path, family: str
) -> None:
    model = getattr(ModelSet.from_dir(models_dir), family)
    row = np.zeros((1, model.n_features), np.float32)
    scorer = model.bind(row)
    assert scorer.out is not None  # bound, not the fallback
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(20):
        row[:] = rng.normal(size=row.shape)  # rewritten in place, never rebound
        got = scorer().copy()
        want = model.session.run([model.output_name], {model.input_name: row})[0]
        np.testing.assert_array_equal(got, want)
        seen.add(got.tobytes())
    assert len(seen) > 1  # the outputs follow the row


def test_a_model_without_a_known_output_shape_is_scored_by_run(models_dir: Path) -> None:
    loaded = ModelSet.from_dir(models_dir).exec
    assert loaded is not None
    model = dataclasses.replace(loaded, _out_spec=None)
    row = np.full((1, model.n_features), 0.5, np.float32)
    scorer = Scorer(model, row)
    assert scorer.out is None
    np.testing.assert_array_equal(scorer(), model.run(row))


def test_the_decider_binds_each_set_once_and_forgets_old_sets(models_dir: Path) -> None:
    sets = [ModelSet.from_dir(models_dir) for _ in range(6)]
    decider = Decider(ModelHolder(sets[0]), StreamCache())
    first = decider.scorers(sets[0])
    assert decider.scorers(sets[0]) is first
    for s in sets[1:]:
        meta, ex, sizer = decider.scorers(s)
        assert meta is not None and ex is not None and sizer is not None
        assert meta.row is decider.meta_row and sizer.row is decider.sizer_row
    assert len(decider._bound) == 4
    assert [entry[0] for entry in decider._bound.values()] == sets[2:]
    assert decider.scorers(sets[0]) is not first  # bound again after it was forgotten


def test_a_partial_set_binds_only_its_models(models_dir: Path) -> None:
    partial = ModelSet.from_paths(meta=models_dir / "meta.onnx")
    meta, ex, sizer = Decider(ModelHolder(partial), StreamCache()).scorers(partial)
    assert meta is not None and ex is None and sizer is None
