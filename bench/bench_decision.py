"""Decision-path latency with three ONNX models against three bare onnxruntime calls.

The models are built here (not by training) with the production IO names of
`features.vectors.MODEL_IO` and training's model sizes (`training.config`): a
RandomForest meta classifier and a GradientBoosting execution model (sklearn ->
skl2onnx, as training does) and a tanh MLP sizer (onnx.helper) ending in [0.1, 2.0].

`run(quick)` runs the sim feed through the engine's features and strategies and,
on every bar with candidates, times `Engine.decide` (feature vector, stream
features, three ONNX calls, sizing, risk) and three bare `session.run` calls on the
rows the decisions build. The two take turns at going first after the bar (the
first finds the models colder in the caches; the bare calls then score the previous
decision's rows). The heap is settled first, as the trader does after start-up.
Quick mode uses tiny models.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from features.vectors import MODEL_FEATURES, MODEL_IO, SIZE_MAX, SIZE_MIN
from infra.contracts import STRATEGIES


def _meta_onnx(
    rng: np.random.Generator, n_rows: int, n_trees: int, depth: int, min_leaf: int
) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import RandomForestClassifier

    width = len(MODEL_FEATURES["meta"])
    x = rng.normal(size=(n_rows, width)).astype(np.float32)
    y = (np.argmax(x[:, :4] + 0.5 * rng.normal(size=(n_rows, 4)), axis=1)).astype(np.int64)
    clf = RandomForestClassifier(
        n_estimators=n_trees, max_depth=depth, min_samples_leaf=min_leaf, random_state=0
    ).fit(x, y)
    onx = convert_sklearn(
        clf,
        initial_types=[(MODEL_IO["meta"]["input"], FloatTensorType([None, width]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(onx.SerializeToString())


def _exec_onnx(rng: np.random.Generator, n_rows: int, n_trees: int, depth: int) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import GradientBoostingRegressor

    names = MODEL_FEATURES["exec"]
    width = len(names)
    x = rng.normal(size=(n_rows, width)).astype(np.float32)
    strategy = rng.integers(0, len(STRATEGIES), n_rows)
    for j, s in enumerate(STRATEGIES):
        x[:, names.index(f"is_{s}")] = strategy == j
    x[:, names.index("side")] = rng.choice([-1.0, 1.0], n_rows)
    edge = np.array([0.05, -0.2, 0.05, 0.35])  # S2, S3, S6, S11: some trades pass, some do not
    y = edge[strategy] + 0.1 * x[:, names.index("side")] * x[:, 0] + 0.05 * rng.normal(size=n_rows)
    reg = GradientBoostingRegressor(n_estimators=n_trees, max_depth=depth, random_state=0).fit(x, y)
    onx = convert_sklearn(
        reg,
        initial_types=[(MODEL_IO["exec"]["input"], FloatTensorType([None, width]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(onx.SerializeToString())


def _sizer_onnx(rng: np.random.Generator, hidden: tuple[int, ...]) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    width = len(MODEL_FEATURES["sizer"])
    inits = []
    nodes = []
    prev, src = width, MODEL_IO["sizer"]["input"]
    for k, units in enumerate((*hidden, 1)):
        w = (rng.normal(size=(prev, units)) / np.sqrt(prev)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{k}"),
            numpy_helper.from_array(np.zeros(units, np.float32), f"b{k}"),
        ]
        nodes.append(helper.make_node("Gemm", [src, f"w{k}", f"b{k}"], [f"h{k}"]))
        src = f"h{k}"
        if k < len(hidden):
            nodes.append(helper.make_node("Tanh", [src], [f"a{k}"]))
            src = f"a{k}"
        prev = units
    inits += [
        numpy_helper.from_array(np.array([SIZE_MAX - SIZE_MIN], np.float32), "scale"),
        numpy_helper.from_array(np.array([SIZE_MIN], np.float32), "low"),
    ]
    nodes += [
        helper.make_node("Sigmoid", [src], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["m"]),
        helper.make_node("Add", ["m", "low"], [MODEL_IO["sizer"]["output"]]),
    ]
    graph = helper.make_graph(
        nodes,
        "sizer",
        [
            helper.make_tensor_value_info(
                MODEL_IO["sizer"]["input"], TensorProto.FLOAT, [None, width]
            )
        ],
        [helper.make_tensor_value_info(MODEL_IO["sizer"]["output"], TensorProto.FLOAT, [None, 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def build_models(out_dir: str | Path, *, small: bool = False, seed: int = 0) -> dict[str, Path]:
    """Write meta.onnx, exec.onnx and sizer.onnx (production IO names) into `out_dir`.

    The sizes are training's (`training.config.TrainConfig`, standard profile:
    RandomForest 50 trees depth 8, GradientBoosting 100 stages depth 3, a 2x32 tanh
    MLP sizer); `small` uses its small (test) profile.
    """
    from training.config import TrainConfig

    cfg = TrainConfig.for_profile("small" if small else "standard")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = 800 if small else 20_000
    blobs = {
        "meta": _meta_onnx(rng, rows, cfg.meta_trees, cfg.meta_max_depth, cfg.meta_min_leaf),
        "exec": _exec_onnx(rng, rows, cfg.exec_trees, cfg.exec_max_depth),
        "sizer": _sizer_onnx(rng, tuple(cfg.sizer_hidden)),
    }
    paths = {}
    for family, blob in blobs.items():
        path = out / f"{family}.onnx"
        path.write_bytes(blob)
        paths[family] = path
    return paths


def _p99(seconds: list[float]) -> float:
    return float(np.percentile(np.asarray(seconds) * 1e6, 99)) if seconds else float("nan")


def run(quick: bool = False) -> dict[str, Any]:
    """Time the decision path and three bare ONNX calls; return p50/p99 and the ratio."""
    import tempfile

    from infra.heap import settle
    from infra.settings import Settings
    from trader.core.engine import Engine, EngineConfig
    from trader.delivery.models import ModelHolder, ModelSet
    from trader.feeds.sim import SimFeed

    with tempfile.TemporaryDirectory() as tmp:
        paths = build_models(tmp, small=quick)
        models = ModelSet.from_paths(paths["meta"], paths["exec"], paths["sizer"], release="bench")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    engine = Engine(settings, EngineConfig(symbols=("ES", "NQ"), source="sim"), ModelHolder(models))
    decider = engine.decider
    settle()  # as the trader does once start-up is over (infra/heap.py)
    meta, ex, sz = models.meta, models.exec, models.sizer
    assert meta and ex and sz
    rows = {
        "meta": np.zeros((1, meta.n_features), np.float32),
        "exec": np.zeros((1, ex.n_features), np.float32),
        "sizer": np.zeros((1, sz.n_features), np.float32),
    }
    want = 300 if quick else 5000
    warmup = 50
    path_times: list[float] = []
    bare_times: list[float] = []
    path_cpu: list[float] = []
    bare_cpu: list[float] = []
    clock, cpu = time.perf_counter, time.thread_time
    order: dict[str, tuple[list[float], list[float]]] = {  # CPU times: path, bare calls
        "path_first": ([], []),
        "bare_first": ([], []),
    }

    def bare_calls() -> None:
        meta.session.run([meta.output_name], {meta.input_name: rows["meta"]})
        ex.session.run([ex.output_name], {ex.input_name: rows["exec"]})
        sz.session.run([sz.output_name], {sz.input_name: rows["sizer"]})

    def keep_rows() -> None:
        rows["meta"][:] = decider.meta_row
        rows["exec"][:] = decider.exec_row
        rows["sizer"][:] = decider.sizer_row

    n = 0
    for bar in SimFeed(("ES", "NQ"), seed=11):
        cands = engine.evaluate_bar(bar)
        if not cands:
            continue
        n += 1
        # Whichever runs first after the bar's features and strategies finds the models'
        # trees colder in the caches; the two take turns, so each is first half the time.
        # Bare first scores the previous decision's rows (this decision's are not built yet).
        if n % 2:
            # the decision path: features, stream features, three ONNX calls, sizing, risk
            c0, t0 = cpu(), clock()
            engine.decide(bar.symbol, cands)
            t1, c1 = clock(), cpu()
            keep_rows()
            c2, t2 = cpu(), clock()
            bare_calls()
            t3, c3 = clock(), cpu()
        else:
            c2, t2 = cpu(), clock()
            bare_calls()
            t3, c3 = clock(), cpu()
            c0, t0 = cpu(), clock()
            engine.decide(bar.symbol, cands)
            t1, c1 = clock(), cpu()
            keep_rows()
        if warmup > 0:
            warmup -= 1
            continue
        path_times.append(t1 - t0)
        bare_times.append(t3 - t2)
        path_cpu.append(c1 - c0)
        bare_cpu.append(c3 - c2)
        first = order["path_first" if n % 2 else "bare_first"]
        first[0].append(c1 - c0)
        first[1].append(c3 - c2)
        if len(path_times) >= want:
            break
    from bench.harness import summarize

    decide = summarize(
        path_times,
        "us",
        scale=1e6,
        baseline="onnx_x3",
        label="decision path (features, 3 ONNX, sizing, risk)",
    )
    bare = summarize(bare_times, "us", scale=1e6, label="3 bare onnxruntime calls, same rows")
    # CPU time of the calling thread: what the path costs when the machine is shared
    decide_cpu = summarize(
        path_cpu, "us", scale=1e6, baseline="onnx_x3_cpu", label="decision path, thread CPU time"
    )
    bare_cpu_s = summarize(
        bare_cpu, "us", scale=1e6, label="3 bare onnxruntime calls, thread CPU time"
    )
    sizes = (
        "training's small-profile models"
        if quick
        else "training's standard sizes: RandomForest 50 trees depth 8, GradientBoosting 100 stages depth 3, MLP 11-32-32-1"
    )
    return {
        "workload": f"{len(path_times)} sim-feed decisions (ES, NQ), batch 1, {sizes}",
        "metrics": {
            "decide": decide,
            "decide_p99": {
                "value": decide["p99"],
                "unit": "us",
                "label": "decision path p99 (absolute)",
            },
            "decide_cpu": decide_cpu,
        },
        "baseline": {"onnx_x3": bare, "onnx_x3_cpu": bare_cpu_s},
        "ratios": {
            "decide": {"vs": "onnx_x3", "stat": "p99", "value": decide["p99"] / bare["p99"]}
        },
        "targets": {
            "decide": {"stat": "p99", "op": "<=", "ratio": 1.5},
            "decide_p99": {"stat": "value", "op": "<", "value": 100, "unit": "us"},
        },
        "notes": (
            f"median ratio {decide['median'] / bare['median']:.2f} (CPU time "
            f"{decide_cpu['median'] / bare_cpu_s['median']:.2f}; CPU time p99 "
            f"{decide_cpu['p99'] / bare_cpu_s['p99']:.2f}); the decision path also builds "
            "the feature vector and the three model inputs and runs the risk check (the Decision "
            "records are built after it, by Engine.decisions); the path and the bare calls take "
            "turns at running first after the bar's features and strategies, when the models' "
            "trees are colder in the caches: CPU time p99 with the path first "
            f"{_p99(order['path_first'][0]):.0f} us (bare calls after it "
            f"{_p99(order['path_first'][1]):.0f} us), with the bare calls first "
            f"{_p99(order['bare_first'][1]):.0f} us (path after them "
            f"{_p99(order['bare_first'][0]):.0f} us); "
            "*_cpu rows count the thread's CPU time (robust when other processes share the cores)"
        ),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, default=str))
