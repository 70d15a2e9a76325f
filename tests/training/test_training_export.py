"""ONNX exports: IO names, four meta columns, the sizer bound in the graph, parity checks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from features.vectors import MODEL_FEATURES, MODEL_IO, SIZE_MAX, SIZE_MIN
from infra.contracts import STRATEGIES
from training.config import ExportError, TrainConfig
from training.export import (
    check_parity,
    export_exec,
    export_meta,
    graph_io,
    meta_native_proba,
    onnx_session,
    run_onnx,
)
from training.models import fit_exec, fit_meta, meta_metrics, sizer_metrics
from training.sizer import SizerEnv, action_to_size, export_sizer, train_sizer

CFG = TrainConfig.for_profile("small")
RNG = np.random.default_rng(0)


def _meta_data(n: int, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    x = RNG.normal(size=(n, len(MODEL_FEATURES["meta"]))).astype(np.float32)
    idx = np.argmax(x[:, : len(classes)], axis=1)
    return x, np.array(classes)[idx]


def test_meta_export_has_four_strategy_columns_even_with_a_missing_class() -> None:
    x, y = _meta_data(600, ("S2", "S6", "S11"))  # S3 never wins in this window
    model = fit_meta(x, y, np.ones(len(y)), CFG)
    blob = export_meta(model)
    assert graph_io(blob) == (["features"], ["probabilities"])
    exp = check_parity("meta", blob, lambda v: meta_native_proba(model, v), x[-200:])
    assert exp.max_abs_diff < 1e-4
    out = exp.holdout_output
    assert out.shape == (200, len(STRATEGIES))
    assert np.all(out[:, STRATEGIES.index("S3")] == 0.0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    # the classifier learned the rule: the right strategy gets the top probability
    assert meta_metrics(out, y[-200:])["accuracy"] > 0.6
    assert len(exp.probe_input) == len(MODEL_FEATURES["meta"]) and len(exp.probe_output) == 4


def test_exec_export_parity_and_io() -> None:
    x = RNG.normal(size=(500, len(MODEL_FEATURES["exec"]))).astype(np.float32)
    y = 0.8 * x[:, 0] + RNG.normal(0, 0.3, 500)
    model = fit_exec(x, y, np.ones(500), CFG)
    blob = export_exec(model)
    assert graph_io(blob) == ([MODEL_IO["exec"]["input"]], [MODEL_IO["exec"]["output"]])
    exp = check_parity("exec", blob, lambda v: model.predict(v).reshape(-1, 1), x[-100:])
    assert exp.holdout_output.shape == (100, 1) and exp.max_abs_diff < 1e-4


def test_parity_check_rejects_a_mismatch_and_a_broken_graph() -> None:
    x = RNG.normal(size=(300, len(MODEL_FEATURES["exec"]))).astype(np.float32)
    model = fit_exec(x, x[:, 1], np.ones(300), CFG)
    blob = export_exec(model)
    with pytest.raises(ExportError, match="max abs diff"):
        check_parity("exec", blob, lambda v: model.predict(v).reshape(-1, 1) + 1e-3, x[:50])
    with pytest.raises(ExportError, match="cannot load"):
        check_parity(
            "exec", blob[: len(blob) // 2], lambda v: model.predict(v).reshape(-1, 1), x[:50]
        )
    with pytest.raises(ExportError, match="holdout rows"):
        check_parity("exec", blob, lambda v: v, x[:0])


def test_sizer_env_rewards_sized_r_minus_drawdown_and_size_penalties() -> None:
    obs = np.zeros((10, len(MODEL_FEATURES["sizer"])), dtype=np.float32)
    r = np.array([1.0, -2.0, 0.5] + [0.0] * 7)
    env = SizerEnv(obs, r, episode_len=3, dd_penalty=0.5, size_penalty=0.1)
    env.reset(seed=0)
    env._i, env._end = 0, 3  # start at the first signal
    _o, rew1, done, _t, info = env.step(np.array([1.0]))  # size 2.0, +2R
    assert info["size"] == pytest.approx(SIZE_MAX)
    assert rew1 == pytest.approx(2.0 - 0.1 * 4.0)
    _o, rew2, done, _t, info = env.step(np.array([-1.0]))  # size 0.1, -0.2R, drawdown 0.2
    assert rew2 == pytest.approx(-0.2 - 0.5 * 0.2 - 0.1 * 0.01)
    _o, _r, done, _t, _i = env.step(np.array([0.0]))
    assert done
    assert action_to_size(np.array([-5.0, 0.0, 5.0])).tolist() == pytest.approx(
        [SIZE_MIN, 1.05, SIZE_MAX]
    )


def test_sizer_learns_to_size_up_good_signals_and_its_graph_bounds_the_size() -> None:
    n = 3000
    obs = RNG.normal(size=(n, len(MODEL_FEATURES["sizer"]))).astype(np.float32)
    r = np.where(obs[:, 1] > 0, 1.0, -1.0) + RNG.normal(0, 0.3, n)  # predicted_r tells the sign
    cfg = TrainConfig.for_profile(
        "small", sizer_timesteps=8192, sizer_n_steps=512, sizer_batch_size=128, sizer_epochs=4
    )
    model = train_sizer(obs, r, cfg)
    blob = export_sizer(model)
    assert graph_io(blob) == (["obs"], ["size"])
    ops = {n.op_type for n in onnx.load_model_from_string(blob).graph.node}
    assert "Clip" in ops  # the bound lives inside the graph
    exp = check_parity("sizer", blob, model.predict_size, obs[-500:])
    assert exp.max_abs_diff < 1e-4
    size = exp.holdout_output.reshape(-1)
    good = obs[-500:, 1] > 0
    assert size[good].mean() > size[~good].mean() + 0.3
    m = sizer_metrics(size, r[-500:])
    assert m["sharpe_sized"] > m["sharpe_fixed"]
    extreme = np.vstack([np.full(11, 1e6), np.full(11, -1e6), np.zeros(11)]).astype(np.float32)
    out = run_onnx(onnx_session(blob), "sizer", extreme).reshape(-1)
    assert np.all((out >= SIZE_MIN - 1e-6) & (out <= SIZE_MAX + 1e-6))
