"""ONNX export of the three models, parity checks against the native models, probes.

Every graph uses the names of `features.vectors.MODEL_IO`: meta `features` ->
`probabilities` [N, 4] in `STRATEGIES` order, exec `features` -> `variable` [N, 1],
sizer `obs` -> `size` [N, 1] bounded to [SIZE_MIN, SIZE_MAX] inside the graph.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from features.vectors import MODEL_FEATURES, MODEL_IO
from infra.contracts import STRATEGIES
from training.config import ExportError

__all__ = [
    "OPSET",
    "Exported",
    "check_parity",
    "export_exec",
    "export_meta",
    "onnx_session",
    "run_onnx",
]

#: ai.onnx and ai.onnx.ml opsets used for every export (onnxruntime >= 1.18 runs them).
OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}


@dataclass(frozen=True)
class Exported:
    """An exported model: the ONNX bytes and its parity and probe results."""

    family: str
    onnx_bytes: bytes
    max_abs_diff: float
    probe_input: tuple[float, ...]
    probe_output: tuple[float, ...]
    holdout_output: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)), repr=False)


def onnx_session(model_bytes: bytes) -> ort.InferenceSession:
    """Load ONNX bytes into a single-threaded CPU onnxruntime session."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several private exception types
        raise ExportError(f"onnxruntime cannot load the model: {exc}") from None


def run_onnx(session: ort.InferenceSession, family: str, x: np.ndarray) -> np.ndarray:
    """Score rows with a session of a family; return a 2-D float array."""
    io_names = MODEL_IO[family]
    out = session.run([io_names["output"]], {io_names["input"]: np.asarray(x, dtype=np.float32)})[0]
    arr = np.asarray(out, dtype=np.float64)
    return arr.reshape(len(x), -1)


def _check_io(model: onnx.ModelProto, family: str) -> None:
    io_names = MODEL_IO[family]
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != [io_names["input"]] or outputs != [io_names["output"]]:
        raise ExportError(
            f"{family}: graph IO is {inputs} -> {outputs}, expected "
            f"[{io_names['input']!r}] -> [{io_names['output']!r}]"
        )
    onnx.checker.check_model(model)


def export_meta(model: object, n_features: int | None = None) -> bytes:
    """Export a fitted RandomForestClassifier to ONNX with a [N, 4] `probabilities` output.

    The classes the forest saw are mapped onto `STRATEGIES` columns by a constant
    0/1 matrix inside the graph, so a strategy absent from the training window gets
    probability 0 and the output always has four columns in `STRATEGIES` order.
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    n = n_features or len(MODEL_FEATURES["meta"])
    classes = [str(c) for c in getattr(model, "classes_", [])]
    unknown = [c for c in classes if c not in STRATEGIES]
    if not classes or unknown:
        raise ExportError(f"meta: classes {classes} are not a subset of {list(STRATEGIES)}")
    onx = convert_sklearn(
        model,
        initial_types=[("features", FloatTensorType([None, n]))],
        options={id(model): {"zipmap": False}},
        target_opset=OPSET,
    )
    graph = onx.graph
    prob_out = next(o for o in graph.output if o.name not in ("label", "output_label"))
    raw = "probabilities_raw"
    for node in graph.node:
        node.output[:] = [raw if o == prob_out.name else o for o in node.output]
    mapping = np.zeros((len(classes), len(STRATEGIES)), dtype=np.float32)
    for i, c in enumerate(classes):
        mapping[i, STRATEGIES.index(c)] = 1.0
    graph.initializer.append(numpy_helper.from_array(mapping, name="class_to_strategy"))
    graph.node.append(helper.make_node("MatMul", [raw, "class_to_strategy"], ["probabilities"]))
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, len(STRATEGIES)])
    )
    _prune(onx)
    _check_io(onx, "meta")
    return bytes(onx.SerializeToString())


def meta_native_proba(model: object, x: np.ndarray) -> np.ndarray:
    """Return the forest's probabilities laid out in `STRATEGIES` columns (zeros if unseen)."""
    proba = np.asarray(model.predict_proba(x), dtype=np.float64)  # type: ignore[attr-defined]
    out = np.zeros((len(x), len(STRATEGIES)), dtype=np.float64)
    for i, c in enumerate(model.classes_):  # type: ignore[attr-defined]
        out[:, STRATEGIES.index(str(c))] = proba[:, i]
    return out


def export_exec(model: object, n_features: int | None = None) -> bytes:
    """Export a fitted GradientBoostingRegressor to ONNX (`features` -> `variable` [N, 1])."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    n = n_features or len(MODEL_FEATURES["exec"])
    onx = convert_sklearn(
        model,
        initial_types=[("features", FloatTensorType([None, n]))],
        final_types=[("variable", FloatTensorType([None, 1]))],
        target_opset=OPSET,
    )
    _check_io(onx, "exec")
    return bytes(onx.SerializeToString())


def _prune(model: onnx.ModelProto) -> None:
    """Drop nodes whose outputs no graph output needs (the forest's label branch)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    keep: list[onnx.NodeProto] = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    # keep every output slot of a kept node (TreeEnsembleClassifier has two outputs)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def check_parity(
    family: str,
    onnx_bytes: bytes,
    native: Callable[[np.ndarray], np.ndarray],
    x_holdout: np.ndarray,
    tol: float = 1e-4,
) -> Exported:
    """Load the export in onnxruntime, score the holdout and compare with the native model.

    Raise `ExportError` when the graph does not load or score, when the output has
    the wrong shape or non-finite values, or when max |onnx - native| >= tol.
    """
    if len(x_holdout) == 0:
        raise ExportError(f"{family}: parity needs holdout rows, got none")
    x = np.ascontiguousarray(x_holdout, dtype=np.float32)
    session = onnx_session(onnx_bytes)
    try:
        got = run_onnx(session, family, x)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{family}: onnxruntime failed to score the holdout: {exc}") from None
    want = np.asarray(native(x), dtype=np.float64).reshape(len(x), -1)
    if got.shape != want.shape:
        raise ExportError(f"{family}: ONNX output shape {got.shape} != native {want.shape}")
    if not np.all(np.isfinite(got)):
        raise ExportError(f"{family}: ONNX output has non-finite values")
    diff = float(np.max(np.abs(got - want)))
    if not diff < tol:
        raise ExportError(f"{family}: ONNX vs native max abs diff {diff:.3g} >= {tol:g}")
    probe_in = x[-1:].copy()
    probe_out = run_onnx(session, family, probe_in)[0]
    return Exported(
        family=family,
        onnx_bytes=onnx_bytes,
        max_abs_diff=diff,
        probe_input=tuple(float(v) for v in probe_in[0]),
        probe_output=tuple(float(v) for v in probe_out),
        holdout_output=got,
    )


def model_from_bytes(data: bytes) -> onnx.ModelProto:
    """Parse ONNX bytes (a helper for tests and `models show`)."""
    return onnx.load_model_from_string(data) if data else onnx.ModelProto()


def graph_io(data: bytes) -> tuple[list[str], list[str]]:
    """Return the input and output names of an ONNX model."""
    model = onnx.load(io.BytesIO(data))
    return [i.name for i in model.graph.input], [o.name for o in model.graph.output]
