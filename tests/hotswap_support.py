"""Small real ONNX models and properly signed releases for the hot-swap tests and bench.

Models are built with `onnx.helper` using the production IO of `features.vectors`:
meta `features`[N, 28] -> `probabilities`[N, 4] (softmax), exec `features`[N, 32] ->
`variable`[N, 1], sizer `obs`[N, 11] -> `size`[N, 1] in [0.1, 2.0]. A release is
published the way training does: ONNX files to `models/{family}/{version}/` in the
object store, a manifest signed over the canonical JSON of its
`model_dump(mode="json")` minus `signatures`, on the compacted `models` topic
(key = model set) and in `models/manifest/latest.json`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

from features.vectors import MODEL_FEATURES, MODEL_IO, SIZE_MAX, SIZE_MIN
from infra.bus import KafkaBus, topic_settings
from infra.contracts import Artifact, GateResult, ModelManifest
from infra.objectstore import object_store
from infra.settings import Settings
from infra.signing import Keyring, sign_body
from trader.delivery.release import LATEST_MANIFEST_KEY

FAMILIES = ("meta", "exec", "sizer")


def _model(family: str, seed: int, width: int | None = None, hidden: int = 0) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    n_in = width if width is not None else len(MODEL_FEATURES[family])
    n_out = 4 if family == "meta" else 1
    inp, out = MODEL_IO[family]["input"], MODEL_IO[family]["output"]
    inits = []
    nodes = []
    src, dim = inp, n_in
    if hidden:
        w0 = (rng.normal(size=(n_in, hidden)) / np.sqrt(n_in)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w0, "w0"),
            numpy_helper.from_array(np.zeros(hidden, np.float32), "b0"),
        ]
        nodes += [
            helper.make_node("Gemm", [inp, "w0", "b0"], ["h0"]),
            helper.make_node("Tanh", ["h0"], ["a0"]),
        ]
        src, dim = "a0", hidden
    w = (rng.normal(size=(dim, n_out)) / np.sqrt(dim)).astype(np.float32)
    b = rng.normal(size=n_out).astype(np.float32) * 0.1
    inits += [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    nodes.append(helper.make_node("Gemm", [src, "w", "b"], ["z"]))
    if family == "meta":
        nodes.append(helper.make_node("Softmax", ["z"], [out], axis=1))
    elif family == "exec":
        nodes.append(helper.make_node("Identity", ["z"], [out]))
    else:
        inits += [
            numpy_helper.from_array(np.array([SIZE_MAX - SIZE_MIN], np.float32), "scale"),
            numpy_helper.from_array(np.array([SIZE_MIN], np.float32), "low"),
        ]
        nodes += [
            helper.make_node("Sigmoid", ["z"], ["s"]),
            helper.make_node("Mul", ["s", "scale"], ["m"]),
            helper.make_node("Add", ["m", "low"], [out]),
        ]
    graph = helper.make_graph(
        nodes,
        f"{family}_{seed}",
        [helper.make_tensor_value_info(inp, TensorProto.FLOAT, [None, n_in])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None, n_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def build_blobs(seed: int = 0, *, hidden: int = 0) -> dict[str, bytes]:
    """Return family -> ONNX bytes of three small valid models."""
    return {f: _model(f, seed * 10 + i, hidden=hidden) for i, f in enumerate(FAMILIES)}


def wrong_width_model(family: str = "meta", width: int = 7) -> bytes:
    """Return a model whose input takes `width` features instead of the contract's."""
    return _model(family, 99, width=width)


def probe(family: str, blob: bytes, seed: int = 0) -> tuple[list[float], list[float]]:
    """Return a probe input and the output onnxruntime scores for it."""
    width = len(MODEL_FEATURES[family])
    row = np.random.default_rng(seed + 7).normal(size=(1, width)).astype(np.float32)
    try:
        sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        out = sess.run([MODEL_IO[family]["output"]], {MODEL_IO[family]["input"]: row})[0]
    except Exception:  # a deliberately broken model: any probe will do, it never loads
        out = np.zeros(4 if family == "meta" else 1)
    return row.reshape(-1).astype(float).tolist(), np.asarray(out).reshape(-1).astype(
        float
    ).tolist()


def upload(settings: Settings, blobs: Mapping[str, bytes], version: str) -> list[Artifact]:
    """Put the ONNX files under `models/{family}/{version}/` and describe them."""
    import hashlib

    store = object_store(settings)
    arts = []
    for family, blob in blobs.items():
        stored = store.put(f"models/{family}/{version}/model.onnx", blob)
        pin, pout = probe(family, blob)
        arts.append(
            Artifact(
                family=family,
                version=version,
                # S3: the bucket's URI; the local store: the key (never an absolute path)
                uri=stored.uri if settings.uses_s3 else stored.key,
                s3_version_id=stored.version_id,
                sha256=hashlib.sha256(blob).hexdigest(),
                size_bytes=len(blob),
                input_names=(MODEL_IO[family]["input"],),
                output_names=(MODEL_IO[family]["output"],),
                feature_names=MODEL_FEATURES[family],
                metrics={"auc": 0.6},
                probe_input=tuple(pin),
                probe_output=tuple(pout),
            )
        )
    return arts


def unsigned_manifest(
    artifacts: list[Artifact], sequence: int, *, release: str | None = None, **fields: Any
) -> ModelManifest:
    """Return an unsigned manifest over the artifacts."""
    return ModelManifest(
        ts_event=datetime.now(UTC),
        release=release or f"r{sequence}",
        sequence=sequence,
        artifacts=tuple(artifacts),
        gate=GateResult(decision="first" if sequence == 1 else "release"),
        **fields,
    )


def body_of(manifest: ModelManifest) -> dict[str, Any]:
    """Return what is signed: the JSON dump without `signatures`."""
    body = manifest.model_dump(mode="json", by_alias=True)
    body.pop("signatures", None)
    return body


def sign(manifest: ModelManifest, keyring: Keyring) -> bytes:
    """Return the wire bytes of the manifest signed with the keyring."""
    body = body_of(manifest)
    body["key_id"] = keyring.signing_key_id or (
        keyring.ed25519_private[0] if keyring.ed25519_private else ""
    )
    sigs = sign_body(body, keyring)
    return orjson.dumps({**body, "signatures": sigs})


def release_bytes(
    settings: Settings,
    sequence: int,
    *,
    seed: int | None = None,
    blobs: Mapping[str, bytes] | None = None,
    keyring: Keyring | None = None,
    mutate: Callable[[list[Artifact]], list[Artifact]] | None = None,
    **fields: Any,
) -> bytes:
    """Upload models and return a signed manifest's bytes (not yet published)."""
    version = fields.pop("version", f"v{sequence}")
    arts = upload(settings, blobs or build_blobs(sequence if seed is None else seed), version)
    if mutate is not None:
        arts = mutate(arts)
    manifest = unsigned_manifest(arts, sequence, **fields)
    return sign(manifest, keyring or Keyring.from_settings(settings))


@dataclass
class Publisher:
    """Publishes raw manifests on the topic and as latest.json."""

    settings: Settings
    model_set: str = "default"

    async def to_topic(self, raw: bytes, key: str | None = None) -> None:
        bus = KafkaBus(self.settings)
        await bus.ensure_topics(topic_settings(bus, ["models"]))
        async with bus.producer() as producer:
            await producer.send(bus.topic("models"), raw, key=(key or self.model_set).encode())

    def to_latest(self, raw: bytes) -> None:
        object_store(self.settings).put(LATEST_MANIFEST_KEY, raw)

    def publish(self, raw: bytes) -> None:
        asyncio.run(self.to_topic(raw))
        self.to_latest(raw)
