"""Immutable sets of the three ONNX models and the holder that swaps them atomically.

A `ModelSet` holds up to three onnxruntime sessions (meta, exec, sizer) with their
versions and load time; it never changes after construction. `ModelHolder.current`
is read once per decision, and `swap(new)` replaces the reference between
decisions (a single attribute assignment, atomic under the GIL), so a decision
always runs on one consistent set.

`LoadedModel.bind(row)` returns a `Scorer`: an onnxruntime IOBinding of a caller's
preallocated input row and a preallocated output array, so a decision scores a model
without building a feed dict or output arrays.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from features.vectors import MODEL_FEATURES, MODEL_IO, SIZE_MAX, SIZE_MIN
from infra.contracts import MODEL_FAMILIES, STRATEGIES
from infra.settings import Settings
from trader.delivery.priority import lowered
from trader.delivery.startup import covering_manifest

__all__ = [
    "EMPTY",
    "LoadedModel",
    "ModelHolder",
    "ModelLoadError",
    "ModelSet",
    "Scorer",
    "session_options",
]

FAMILIES: tuple[str, ...] = MODEL_FAMILIES


class ModelLoadError(ValueError):
    """Raise when a model cannot be loaded, has the wrong IO, or fails its probe."""

    def __init__(self, family: str, reason: str) -> None:
        self.family = family
        self.reason = reason
        super().__init__(f"{family} model: {reason}")


def session_options() -> ort.SessionOptions:
    """Return options for small single-row models: one thread, sequential, all optimisations."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


@dataclass(frozen=True)
class LoadedModel:
    """One scored ONNX model: its session, IO names, width, version and digest."""

    family: str
    version: str
    session: ort.InferenceSession
    input_name: str
    output_name: str
    n_features: int
    sha256: str
    _outputs: list[str] = field(default_factory=list, repr=False)
    #: shape and dtype of the output for one row (None: `bind` falls back to `run`)
    _out_spec: tuple[tuple[int, ...], np.dtype[Any]] | None = field(default=None, repr=False)

    @classmethod
    def load(cls, family: str, blob: bytes, version: str) -> LoadedModel:
        """Build a session from ONNX bytes and check its IO against `MODEL_IO`."""
        if family not in MODEL_IO:
            raise ModelLoadError(family, f"unknown family (expected one of {', '.join(FAMILIES)})")
        io = MODEL_IO[family]
        width = len(MODEL_FEATURES[family])
        try:
            with lowered():  # lower priority inside a background load
                sess = ort.InferenceSession(
                    blob, sess_options=session_options(), providers=["CPUExecutionProvider"]
                )
        except Exception as exc:  # onnxruntime raises several private exception types
            raise ModelLoadError(family, f"onnxruntime cannot load it: {exc}") from None
        inputs = {i.name: i for i in sess.get_inputs()}
        if io["input"] not in inputs:
            raise ModelLoadError(family, f"input {io['input']!r} missing (has {sorted(inputs)})")
        shape = inputs[io["input"]].shape
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != width):
            raise ModelLoadError(family, f"input shape {shape} does not take {width} features")
        outputs = [o.name for o in sess.get_outputs()]
        if io["output"] not in outputs:
            raise ModelLoadError(family, f"output {io['output']!r} missing (has {outputs})")
        try:  # the output of one row, so `bind` can preallocate it; `probe` checks the values
            one = sess.run([io["output"]], {io["input"]: np.zeros((1, width), np.float32)})[0]
            out_spec = (tuple(one.shape), one.dtype) if isinstance(one, np.ndarray) else None
        except Exception:  # the probe reports what is wrong with the model
            out_spec = None
        return cls(
            family=family,
            version=version,
            session=sess,
            input_name=io["input"],
            output_name=io["output"],
            n_features=width,
            sha256=hashlib.sha256(blob).hexdigest(),
            _outputs=[io["output"]],
            _out_spec=out_spec,
        )

    def run(self, row: np.ndarray) -> np.ndarray:
        """Score a [1, n] float32 row and return the model's output array."""
        return self.session.run(self._outputs, {self.input_name: row})[0]  # type: ignore[no-any-return]

    def bind(self, row: np.ndarray) -> Scorer:
        """Return a scorer of `row` (float32 [1, n], rewritten in place before each call)."""
        return Scorer(self, row)


class Scorer:
    """Score one preallocated input row into one preallocated output array.

    The IOBinding reads `row` where it lies and writes the output in place; calling
    returns that output array (valid until the next call). A model whose output
    shape could not be learned at load is scored with `LoadedModel.run` instead.
    """

    __slots__ = ("_binding", "_model", "_run", "out", "row")

    def __init__(self, model: LoadedModel, row: np.ndarray) -> None:
        self._model = model
        self.row = row
        self._binding: Any = None
        self.out: np.ndarray | None = None
        self._run: Any = None
        spec = model._out_spec
        if spec is not None and row.dtype == np.float32 and row.flags.c_contiguous:
            shape, dtype = spec
            out = np.zeros(shape, dtype)
            binding = model.session.io_binding()
            binding.bind_cpu_input(model.input_name, row)
            binding.bind_output(model.output_name, "cpu", 0, dtype, shape, out.ctypes.data)
            # the session's native run on the native binding: what `run_with_iobinding`
            # calls after per-call checks that a CPU session with no run options never needs
            native = getattr(model.session, "_sess", None)
            inner = getattr(binding, "_iobinding", None)
            if native is not None and inner is not None:
                self._binding, self._run = inner, native.run_with_iobinding
            else:
                self._binding, self._run = binding, model.session.run_with_iobinding
            self.out = out

    def __call__(self) -> np.ndarray:
        """Score the row as it is now; return the output array."""
        binding = self._binding
        if binding is None:
            return self._model.run(self.row)
        self._run(binding, None)
        return self.out  # type: ignore[return-value]


class ModelSet:
    """Up to three loaded models with versions and a load time; immutable."""

    __slots__ = ("_models", "_versions", "loaded_at", "release")

    def __init__(
        self,
        models: Mapping[str, LoadedModel],
        *,
        release: str = "",
        loaded_at: float | None = None,
    ) -> None:
        self._models = dict(models)
        self._versions = {f: m.version for f, m in sorted(self._models.items())}
        self.release = release or "+".join(
            f"{f}:{m.version}" for f, m in sorted(self._models.items())
        )
        self.loaded_at = time.time() if loaded_at is None else loaded_at

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "loaded_at"):
            raise AttributeError("ModelSet is immutable")
        object.__setattr__(self, name, value)

    @property
    def meta(self) -> LoadedModel | None:
        """Return the meta classifier, if loaded."""
        return self._models.get("meta")

    @property
    def exec(self) -> LoadedModel | None:
        """Return the execution-quality model, if loaded."""
        return self._models.get("exec")

    @property
    def sizer(self) -> LoadedModel | None:
        """Return the RL sizer, if loaded."""
        return self._models.get("sizer")

    @property
    def empty(self) -> bool:
        """Say whether no model is loaded (the rule-based path decides)."""
        return not self._models

    @property
    def families(self) -> tuple[str, ...]:
        """Return the loaded families."""
        return tuple(f for f in FAMILIES if f in self._models)

    @property
    def versions(self) -> dict[str, str]:
        """Return family -> version of the loaded models (do not mutate)."""
        return self._versions

    def age_s(self, now: float | None = None) -> float:
        """Return seconds since this set was loaded."""
        return (time.time() if now is None else now) - self.loaded_at

    # constructors -------------------------------------------------------

    @classmethod
    def from_bytes(
        cls, blobs: Mapping[str, bytes], version: str | Mapping[str, str], *, release: str = ""
    ) -> ModelSet:
        """Build a set from family -> ONNX bytes and one version (or one per family)."""
        models = {}
        for family, blob in blobs.items():
            v = version if isinstance(version, str) else version.get(family, "")
            models[family] = LoadedModel.load(
                family, blob, v or f"sha-{hashlib.sha256(blob).hexdigest()[:12]}"
            )
        return cls(models, release=release or (version if isinstance(version, str) else ""))

    @classmethod
    def from_paths(
        cls,
        meta: str | Path | None = None,
        exec: str | Path | None = None,
        sizer: str | Path | None = None,
        *,
        release: str = "",
    ) -> ModelSet:
        """Build a set from ONNX files (`META_ONNX`, `EXEC_ONNX`, `RL_ONNX`); version = file digest."""
        blobs, versions = _path_blobs(meta, exec, sizer)
        return cls.from_bytes(blobs, versions, release=release)

    @classmethod
    def from_dir(cls, path: str | Path) -> ModelSet:
        """Build a set from a directory.

        Either flat files `{dir}/{family}.onnx` (versions from `{dir}/versions.json`
        when present, else the file digest), or the bucket layout
        `{dir}/{family}/{version}/*.onnx`, taking the latest version (sorted) per family.
        """
        blobs, versions, release = _dir_blobs(path)
        return cls.from_bytes(blobs, versions, release=release)

    @classmethod
    def from_settings(
        cls, settings: Settings, models_dir: str | None = None, *, require_signed: bool = True
    ) -> ModelSet:
        """Load from `--models-dir`/`MODELS_DIR`, else `META_ONNX`/`EXEC_ONNX`/`RL_ONNX` (maybe empty).

        With `require_signed` (a trader), the files must be covered by a signed manifest
        (`MODELS_MANIFEST`, default `{dir}/manifest.json`: its signature verified as the
        hot swap does, each file's sha256 the one it lists) unless ALLOW_UNSIGNED_MODELS=1;
        else `UnsignedModelsError` (code `unsigned_models`), checked before any file is
        parsed. A backtest places no orders and passes `require_signed=False`.
        """
        directory = models_dir or settings.models_dir
        release = ""
        if directory:
            blobs, versions, release = _dir_blobs(directory)
        elif settings.meta_onnx or settings.exec_onnx or settings.rl_onnx:
            blobs, versions = _path_blobs(
                settings.meta_onnx or None, settings.exec_onnx or None, settings.rl_onnx or None
            )
        else:
            return EMPTY
        if require_signed and not settings.allow_unsigned_models:
            manifest = covering_manifest(blobs, settings, directory)
            versions = {a.family: a.version for a in manifest.artifacts if a.family in blobs}
            release = manifest.release
        return cls.from_bytes(blobs, versions, release=release)

    # checks -------------------------------------------------------------

    def probe(self, rows: Mapping[str, np.ndarray] | None = None) -> dict[str, list[float]]:
        """Score a probe row on every model and check the outputs; return them.

        Raise `ModelLoadError` if an output has the wrong shape, is not finite, the
        meta probabilities do not sum to 1, or the sizer leaves [0.1, 2.0].
        """
        out: dict[str, list[float]] = {}
        for family, model in self._models.items():
            row = rows.get(family) if rows else None
            if row is None:
                row = np.zeros((1, model.n_features), dtype=np.float32)
            row = np.asarray(row, dtype=np.float32).reshape(1, model.n_features)
            try:
                result = np.asarray(model.run(row), dtype=np.float64).reshape(-1)
            except Exception as exc:  # onnxruntime errors are not a public type
                raise ModelLoadError(family, f"probe failed: {exc}") from None
            if not np.all(np.isfinite(result)):
                raise ModelLoadError(family, f"probe output is not finite: {result.tolist()}")
            if family == "meta":
                if result.size != len(STRATEGIES):
                    raise ModelLoadError(
                        family,
                        f"probabilities have {result.size} values, expected {len(STRATEGIES)}",
                    )
                if not math.isclose(float(result.sum()), 1.0, abs_tol=1e-3) or result.min() < -1e-6:
                    raise ModelLoadError(
                        family, f"probabilities are not a distribution: {result.tolist()}"
                    )
            elif result.size != 1:
                raise ModelLoadError(family, f"output has {result.size} values, expected 1")
            if family == "sizer" and not SIZE_MIN - 1e-3 <= result[0] <= SIZE_MAX + 1e-3:
                raise ModelLoadError(
                    family, f"size {result[0]:.4f} outside [{SIZE_MIN}, {SIZE_MAX}]"
                )
            out[family] = result.tolist()
        return out


EMPTY = ModelSet({}, release="none", loaded_at=0.0)


class ModelHolder:
    """The serving reference: read `current` once per decision; `swap` between decisions."""

    def __init__(self, initial: ModelSet | None = None) -> None:
        self._current = initial or EMPTY
        self._lock = threading.Lock()
        self.swaps = 0
        self.swapped_at = time.time()

    @property
    def current(self) -> ModelSet:
        """Return the set serving decisions now."""
        return self._current

    def swap(self, new: ModelSet) -> ModelSet:
        """Serve `new` from the next decision on; return the set it replaced."""
        with self._lock:
            old, self._current = self._current, new
            self.swaps += 1
            self.swapped_at = time.time()
        return old


def _path_blobs(
    meta: str | Path | None, exec: str | Path | None, sizer: str | Path | None
) -> tuple[dict[str, bytes], dict[str, str]]:
    blobs: dict[str, bytes] = {}
    for family, path in (("meta", meta), ("exec", exec), ("sizer", sizer)):
        if path:
            try:
                blobs[family] = Path(path).read_bytes()
            except OSError as exc:
                raise ModelLoadError(family, f"cannot read {path}: {exc}") from None
    versions = {f: f"sha-{hashlib.sha256(b).hexdigest()[:12]}" for f, b in blobs.items()}
    return blobs, versions


def _dir_blobs(path: str | Path) -> tuple[dict[str, bytes], dict[str, str], str]:
    root = Path(path)
    if not root.is_dir():
        raise ModelLoadError("meta", f"models directory {root} does not exist")
    declared: dict[str, str] = {}
    release = ""
    vfile = root / "versions.json"
    if vfile.exists():
        try:
            spec = json.loads(vfile.read_text())
        except ValueError as exc:
            raise ModelLoadError("meta", f"{vfile} is not valid JSON: {exc}") from None
        declared = {k: str(v) for k, v in dict(spec.get("versions", spec)).items() if k in FAMILIES}
        release = str(spec.get("release", "")) if isinstance(spec, dict) else ""
    blobs: dict[str, bytes] = {}
    versions: dict[str, str] = {}
    for family in FAMILIES:
        flat = root / f"{family}.onnx"
        if flat.exists():
            blobs[family] = flat.read_bytes()
            versions[family] = (
                declared.get(family) or f"sha-{hashlib.sha256(blobs[family]).hexdigest()[:12]}"
            )
            continue
        fam_dir = root / family
        if fam_dir.is_dir():
            for vdir in sorted((d for d in fam_dir.iterdir() if d.is_dir()), reverse=True):
                files = sorted(vdir.glob("*.onnx"))
                if files:
                    blobs[family] = files[0].read_bytes()
                    versions[family] = vdir.name
                    break
    return blobs, versions, release
