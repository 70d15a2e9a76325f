"""Storage keys and layouts of the model store, spelled once."""

from __future__ import annotations

import re

__all__ = [
    "DEFAULT_MODEL_SET",
    "LATEST_MANIFEST_KEY",
    "MANIFEST_PREFIX",
    "MANIFEST_SEQ_RE",
    "MODELS_PREFIX",
    "artifact_bundle_key",
    "artifact_key",
    "latest_manifest_key",
    "manifest_key",
]

#: Everything a release writes lies under this prefix of the bucket.
MODELS_PREFIX = "models/"
#: Every manifest ever published: `models/manifest/{sequence}.json`.
MANIFEST_PREFIX = f"{MODELS_PREFIX}manifest/"
#: The newest manifest of the default model set (what traders poll).
LATEST_MANIFEST_KEY = f"{MANIFEST_PREFIX}latest.json"
MANIFEST_SEQ_RE = re.compile(rf"^{re.escape(MANIFEST_PREFIX)}(\d+)\.json$")
DEFAULT_MODEL_SET = "default"
_SET_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


def latest_manifest_key(model_set: str = DEFAULT_MODEL_SET) -> str:
    """Return where the newest manifest of a model set lives; raise ValueError on a bad name."""
    if model_set == DEFAULT_MODEL_SET:
        return LATEST_MANIFEST_KEY
    if not _SET_NAME_RE.fullmatch(model_set):
        raise ValueError(f"bad model set name {model_set!r}")
    return f"{MANIFEST_PREFIX}sets/{model_set}/latest.json"


def manifest_key(sequence: int) -> str:
    """Return the key of the manifest with a sequence number."""
    return f"{MANIFEST_PREFIX}{sequence}.json"


def artifact_key(family: str, version: str) -> str:
    """Return the store key of a family's ONNX file in a version."""
    return f"{MODELS_PREFIX}{family}/{version}/{family}.onnx"


def artifact_bundle_key(family: str, version: str) -> str:
    """Return the store key of the OpenSSF model-signing bundle beside a family's ONNX file."""
    return f"{MODELS_PREFIX}{family}/{version}/model.sig"
