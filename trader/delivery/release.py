"""Verify a signed model release and load it into a `ModelSet`, or reject it with a code.

`verify_release` is blocking (it downloads and loads ONNX files): call it off the
decision path (`asyncio.to_thread`). The checks, in order, each with its rejection
code:

- `malformed`        the bytes are not a JSON object (or `signatures` is not a list)
- `unsigned`         no signature
- `unknown_key_id`   no signature is by a key this trader knows
- `bad_signature`    a signature by a known key does not verify (constant time)
- `invalid_manifest` the body does not decode as a `ModelManifest`
- `wrong_model_set`  the release is for another model set
- `stale_sequence`   the sequence is not newer than the one serving (a rollback is
                     itself a new signed release with a higher sequence)
- `feature_mismatch` an artifact's feature or input names differ from the model
                     contract (`MODEL_FEATURES`, `MODEL_IO`), or the ONNX graph's
                     input does not take them
- `missing_artifact` an artifact cannot be downloaded
- `sha_mismatch`     the bytes differ from the manifest's sha256 or size
- `load_failed`      onnxruntime cannot load a file
- `probe_mismatch`   a model does not score the manifest's probe input to its probe
                     output within `PROBE_TOLERANCE`, or its output is out of range

The signature covers the canonical JSON (`infra.signing.canonical_json`) of the
manifest without `signatures`. It is checked over the JSON object as received and,
when that fails, over the decoded manifest's `model_dump(mode="json")`: publishers
serialise datetimes either way, and the decoded manifest is what gets used.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import orjson

from features.vectors import MODEL_FEATURES, MODEL_IO
from infra.contracts import LATEST_MANIFEST_KEY, Artifact, EventDecodeError, ModelManifest, decode
from infra.objectstore import LocalObjectStore, ObjectNotFoundError, S3ObjectStore, s3_client
from infra.settings import Settings
from infra.signing import Keyring, SignatureError, verify_body
from trader.delivery.models import ModelLoadError, ModelSet

__all__ = [
    "LATEST_MANIFEST_KEY",
    "PROBE_TOLERANCE",
    "REJECTION_CODES",
    "TRANSIENT_CODES",
    "ReleaseRejected",
    "check_blobs",
    "check_manifest",
    "fetch_artifact",
    "fetch_blobs",
    "load_checked",
    "peek_sequence",
    "verify_release",
]

#: Where training writes the newest manifest, relative to the object store root.
#: Largest absolute difference allowed between a probe output and the manifest's.
PROBE_TOLERANCE = 1e-4

REJECTION_CODES: tuple[str, ...] = (
    "malformed",
    "unsigned",
    "unknown_key_id",
    "bad_signature",
    "invalid_manifest",
    "wrong_model_set",
    "stale_sequence",
    "feature_mismatch",
    "missing_artifact",
    "sha_mismatch",
    "load_failed",
    "probe_mismatch",
)
#: Codes that may pass on a later attempt with the same bytes (an upload still under way).
TRANSIENT_CODES: frozenset[str] = frozenset({"missing_artifact"})

_ONNX_LOAD_PREFIX = "onnxruntime cannot load"


class ReleaseRejected(Exception):
    """Raise when a release fails a check; `code` names which (see `REJECTION_CODES`).

    `release` and `sequence` are those of the manifest; when the signature did not
    verify they are only what the bytes claim (`claimed` is True). `detail` never
    contains key material or signature values.
    """

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        release: str = "",
        sequence: int | None = None,
        claimed: bool = False,
    ) -> None:
        self.code = code
        self.detail = detail
        self.release = release
        self.sequence = sequence
        self.claimed = claimed
        super().__init__(f"{code}: {detail}")


def _claimed(obj: Mapping[str, Any], code: str, detail: str) -> ReleaseRejected:
    """Return a rejection naming the release and sequence the unverified body claims."""
    release = obj.get("release")
    sequence = obj.get("sequence")
    return ReleaseRejected(
        code,
        detail,
        release=release[:200] if isinstance(release, str) else "",
        sequence=sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else None,
        claimed=True,
    )


@dataclass(frozen=True, slots=True)
class _Parsed:
    obj: dict[str, Any]
    signatures: list[Mapping[str, Any]]


def _parse(raw: bytes) -> _Parsed:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ReleaseRejected("malformed", f"not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ReleaseRejected("malformed", f"expected a JSON object, got {type(obj).__name__}")
    sigs = obj.get("signatures", [])
    if sigs is None:
        sigs = []
    if not isinstance(sigs, list) or not all(isinstance(s, dict) for s in sigs):
        raise ReleaseRejected("malformed", "'signatures' is not a list of objects")
    return _Parsed(obj, sigs)


def _decode(raw: bytes) -> ModelManifest:
    try:
        return decode(raw, ModelManifest)
    except EventDecodeError as exc:
        raise ReleaseRejected("invalid_manifest", str(exc)) from None


def _verify_signature(parsed: _Parsed, raw: bytes, keyring: Keyring) -> ModelManifest:
    """Check the signatures; return the decoded manifest."""
    obj = parsed.obj
    try:
        verify_body(obj, parsed.signatures, keyring)
    except SignatureError as exc:
        if exc.code != "bad_signature":
            code = exc.code if exc.code in ("unsigned", "unknown_key_id") else "bad_signature"
            raise _claimed(obj, code, _safe_detail(exc)) from None
        # The publisher may have signed the model's JSON dump (datetimes as `...Z`).
        try:
            manifest = _decode(raw)
        except ReleaseRejected:
            raise _claimed(obj, "bad_signature", _safe_detail(exc)) from None
        body = manifest.model_dump(mode="json", by_alias=True)
        body.pop("signatures", None)
        try:
            verify_body(body, parsed.signatures, keyring)
        except SignatureError as again:
            raise _claimed(obj, "bad_signature", _safe_detail(again)) from None
        return manifest
    except (TypeError, ValueError) as exc:  # a value with no canonical JSON form
        raise _claimed(obj, "malformed", f"no canonical JSON form: {exc}") from None
    return _decode(raw)


def _safe_detail(exc: SignatureError) -> str:
    """Return the error text without its code prefix (it names key ids, never keys)."""
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text


def peek_sequence(raw: bytes) -> int:
    """Return the claimed (unverified) sequence of a manifest, or 0; only to order candidates."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return 0
    seq = obj.get("sequence") if isinstance(obj, dict) else None
    return seq if isinstance(seq, int) else 0


def _check_contract(art: Artifact) -> None:
    family = art.family
    if family not in MODEL_IO:
        raise ReleaseRejected(
            "feature_mismatch",
            f"unknown model family {family!r} (expected one of {list(MODEL_IO)})",
        )
    want_features = MODEL_FEATURES[family]
    if tuple(art.feature_names) != want_features:
        missing = [n for n in want_features if n not in art.feature_names][:5]
        extra = [n for n in art.feature_names if n not in want_features][:5]
        raise ReleaseRejected(
            "feature_mismatch",
            f"{family}: feature_names differ from the model contract "
            f"({len(art.feature_names)} vs {len(want_features)}; missing {missing}, extra {extra})",
        )
    want_input = MODEL_IO[family]["input"]
    if tuple(art.input_names) != (want_input,):
        raise ReleaseRejected(
            "feature_mismatch",
            f"{family}: input_names {list(art.input_names)} are not [{want_input!r}]",
        )
    want_output = MODEL_IO[family]["output"]
    if art.output_names and want_output not in art.output_names:
        raise ReleaseRejected(
            "feature_mismatch",
            f"{family}: output_names {list(art.output_names)} lack {want_output!r}",
        )


def _local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    return Path(parsed.path if parsed.scheme == "file" else uri)


def fetch_artifact(art: Artifact, settings: Settings, *, client: Any = None) -> bytes:
    """Download an artifact's bytes (S3 by bucket, key and version id, or a local path).

    A relative URI is a key in the configured object store. `client` is a boto3 S3
    client to reuse (default: a new one). Raise `ObjectNotFoundError` (or the store's
    error) when the bytes cannot be had.
    """
    parsed = urlparse(art.uri)
    if parsed.scheme == "s3":
        store = S3ObjectStore(client or s3_client(settings), parsed.netloc)
        return store.get(parsed.path.lstrip("/"), art.s3_version_id)
    if parsed.scheme not in ("", "file"):
        raise ObjectNotFoundError(f"unsupported artifact URI scheme {parsed.scheme!r}")
    path = _local_path(art.uri)
    if not path.is_absolute():
        if settings.uses_s3:
            store_s3 = S3ObjectStore(client or s3_client(settings), settings.bucket)
            return store_s3.get(art.uri, art.s3_version_id)
        return LocalObjectStore(settings.store_root).get(art.uri, art.s3_version_id)
    root = settings.store_root
    if art.s3_version_id and root in path.parents:
        # The local store keeps an immutable copy of every version under `.versions/`.
        key = path.relative_to(root).as_posix()
        try:
            return LocalObjectStore(root).get(key, art.s3_version_id)
        except ObjectNotFoundError:
            pass  # a store without that version copy: read the file, the sha256 decides
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ObjectNotFoundError(str(path)) from None


def fetch_blobs(
    manifest: ModelManifest, settings: Settings, *, client: Any = None
) -> dict[str, bytes]:
    """Download every artifact of a verified manifest and check its size and sha256.

    Raise `ReleaseRejected` (`missing_artifact`, `sha_mismatch`).
    """
    blobs: dict[str, bytes] = {}
    for art in manifest.artifacts:
        try:
            blob = fetch_artifact(art, settings, client=client)
        except ObjectNotFoundError as exc:
            raise _rejected(manifest, "missing_artifact", f"{art.family}: {exc}") from None
        except Exception as exc:  # the store is unreachable or refused: may pass later
            raise _rejected(
                manifest, "missing_artifact", f"{art.family}: {type(exc).__name__}: {exc}"
            ) from None
        _check_blob(manifest, art, blob)
        blobs[art.family] = blob
    return blobs


def check_blobs(manifest: ModelManifest, blobs: Mapping[str, bytes]) -> None:
    """Check that `blobs` holds exactly the manifest's artifacts, by size and sha256.

    Raise `ReleaseRejected` (`missing_artifact`, `sha_mismatch`). hashlib frees the GIL
    while it hashes, so this costs the decision loop next to nothing.
    """
    for art in manifest.artifacts:
        blob = blobs.get(art.family)
        if blob is None:
            raise _rejected(manifest, "missing_artifact", f"{art.family}: no bytes")
        _check_blob(manifest, art, blob)
    extra = sorted(set(blobs) - {a.family for a in manifest.artifacts})
    if extra:
        raise _rejected(manifest, "sha_mismatch", f"bytes for unlisted families {extra}")


def _check_blob(manifest: ModelManifest, art: Artifact, blob: bytes) -> None:
    if len(blob) != art.size_bytes:
        raise _rejected(
            manifest,
            "sha_mismatch",
            f"{art.family}: {len(blob)} bytes, manifest says {art.size_bytes}",
        )
    digest = hashlib.sha256(blob).hexdigest()
    if not hmac.compare_digest(digest, art.sha256):
        raise _rejected(
            manifest,
            "sha_mismatch",
            f"{art.family}: sha256 {digest[:16]}… differs from {art.sha256[:16]}…",
        )


def _load(manifest: ModelManifest, blobs: Mapping[str, bytes]) -> ModelSet:
    versions = {a.family: a.version for a in manifest.artifacts}
    try:
        return ModelSet.from_bytes(blobs, versions, release=manifest.release)
    except ModelLoadError as exc:
        code = "load_failed" if exc.reason.startswith(_ONNX_LOAD_PREFIX) else "feature_mismatch"
        raise _rejected(manifest, code, str(exc)[:500]) from None


def _probe(manifest: ModelManifest, models: ModelSet) -> None:
    rows: dict[str, np.ndarray] = {}
    for art in manifest.artifacts:
        width = len(MODEL_FEATURES[art.family])
        if not art.probe_input or not art.probe_output:
            raise _rejected(manifest, "probe_mismatch", f"{art.family}: no probe vector")
        if len(art.probe_input) != width:
            raise _rejected(
                manifest,
                "probe_mismatch",
                f"{art.family}: probe_input has {len(art.probe_input)} values, model takes {width}",
            )
        rows[art.family] = np.asarray(art.probe_input, dtype=np.float32).reshape(1, width)
    try:
        outputs = models.probe(rows)
    except ModelLoadError as exc:
        raise _rejected(manifest, "probe_mismatch", str(exc)[:500]) from None
    for art in manifest.artifacts:
        got = np.asarray(outputs[art.family], dtype=np.float64)
        want = np.asarray(art.probe_output, dtype=np.float64)
        if got.shape != want.shape:
            raise _rejected(
                manifest,
                "probe_mismatch",
                f"{art.family}: {got.size} output values, manifest expects {want.size}",
            )
        diff = float(np.max(np.abs(got - want))) if got.size else 0.0
        if not diff <= PROBE_TOLERANCE:
            raise _rejected(
                manifest,
                "probe_mismatch",
                f"{art.family}: probe output off by {diff:.3g} (> {PROBE_TOLERANCE:g})",
            )


def _rejected(manifest: ModelManifest, code: str, detail: str) -> ReleaseRejected:
    return ReleaseRejected(code, detail, release=manifest.release, sequence=manifest.sequence)


def verify_release(
    raw: bytes,
    serving_sequence: int,
    keyring: Keyring,
    settings: Settings,
    *,
    model_set: str | None = None,
) -> tuple[ModelManifest, ModelSet]:
    """Verify a manifest's bytes, download and load its models; return both.

    Blocking: run it in a worker thread. Raise `ReleaseRejected` on the first failed
    check (see the module docstring for the codes, in order).
    """
    manifest = check_manifest(raw, serving_sequence, keyring, model_set=model_set)
    blobs = fetch_blobs(manifest, settings)
    return manifest, load_checked(manifest, blobs)


def check_manifest(
    raw: bytes, serving_sequence: int, keyring: Keyring, *, model_set: str | None = None
) -> ModelManifest:
    """Run the checks that need no artifact: `malformed` to `feature_mismatch`.

    Return the verified manifest; raise `ReleaseRejected` on the first failed check.
    """
    parsed = _parse(raw)
    manifest = _verify_signature(parsed, raw, keyring)
    if not manifest.artifacts:
        raise _rejected(manifest, "invalid_manifest", "the release lists no artifact")
    families = [a.family for a in manifest.artifacts]
    if len(set(families)) != len(families):
        raise _rejected(manifest, "invalid_manifest", f"a family appears twice in {families}")
    if model_set is not None and manifest.model_set != model_set:
        raise _rejected(
            manifest,
            "wrong_model_set",
            f"release is for model set {manifest.model_set!r}, this trader serves {model_set!r}",
        )
    if manifest.sequence <= serving_sequence:
        raise _rejected(
            manifest,
            "stale_sequence",
            f"sequence {manifest.sequence} is not newer than {serving_sequence} (serving)",
        )
    for art in manifest.artifacts:
        _check_contract(art)
    return manifest


def load_checked(manifest: ModelManifest, blobs: Mapping[str, bytes]) -> ModelSet:
    """Load checked bytes into a `ModelSet` and score the probes (which also warms it).

    Raise `ReleaseRejected` (`load_failed`, `feature_mismatch`, `probe_mismatch`).
    """
    models = _load(manifest, blobs)
    _probe(manifest, models)
    return models


def describe_keyring(keyring: Keyring) -> dict[str, list[str]]:
    """Return the key ids this trader verifies with (never the keys)."""
    return {
        "hmac": sorted(keyring.hmac_keys),
        "ed25519": sorted(keyring.ed25519_public),
    }
