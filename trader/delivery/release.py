"""Verify a signed model release and load it into a `ModelSet`, or reject it with a code.

`verify_release` is blocking (it downloads and loads ONNX files): call it off the
decision path (`asyncio.to_thread`). The checks, in order, each with its rejection
code:

- `malformed`        the bytes are not a JSON object (or `signatures` is not a list)
- `unsigned`         no signature
- `downgrade`        no signature of the kind this trader requires: with
                     MANIFEST_ED25519_PUBLIC_KEYS, a valid Ed25519 one (whatever HMAC
                     it carries); without, HMAC only under ALLOW_HMAC_RELEASES=1
- `unknown_key_id`   no signature is by a key this trader knows
- `bad_signature`    a signature by a known key does not verify (constant time)
- `invalid_manifest` the body does not decode as a `ModelManifest`, or does not
                     re-serialise to exactly the signed JSON (no coercion)
- `wrong_model_set`  the release is for another model set
- `replayed`         older than the release this trader last accepted (persisted in
                     RELEASE_STATE_PATH, so also after a restart), or that sequence
                     with other bytes
- `stale_sequence`   the sequence is not newer than the one serving (a rollback is
                     itself a new signed release with a higher sequence)
- `chain_broken`     the manifest links to a previous manifest other than the one
                     this trader accepted (other bytes, or a fork before it)
- `feature_mismatch` an artifact's feature or input names differ from the model
                     contract (`MODEL_FEATURES`, `MODEL_IO`), or the ONNX graph's
                     input does not take them
- `bad_uri`          an artifact lies outside the release bucket's
                     `models/{family}/{version}/` (pinned version id) and CDN_BASE_URL
- `too_large`        an artifact declares, or downloads, more than MAX_ARTIFACT_BYTES
- `missing_artifact` an artifact cannot be downloaded
- `sha_mismatch`     the bytes differ from the manifest's sha256 or size
- `load_failed`      onnxruntime cannot load a file
- `probe_mismatch`   a model does not score the manifest's probe input to its probe
                     output within `PROBE_TOLERANCE`, or its output is out of range

The signature covers the canonical JSON (`infra.signing.canonical_json`) of the
manifest, as received, without `signatures` (`trader.delivery.trust`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import numpy as np

from features.vectors import MODEL_FEATURES, MODEL_IO
from infra.contracts import LATEST_MANIFEST_KEY, Artifact, ModelManifest
from infra.objectstore import ObjectNotFoundError, ObjectTooLargeError
from infra.settings import Settings
from infra.signing import Keyring
from trader.delivery.artifacts import ArtifactRefused, check_artifact, fetch_artifact
from trader.delivery.models import ModelLoadError, ModelSet
from trader.delivery.replay import AcceptedRelease
from trader.delivery.trust import ReleaseRejected, peek_sequence, verified_manifest

__all__ = [
    "LATEST_MANIFEST_KEY",
    "PROBE_TOLERANCE",
    "REJECTION_CODES",
    "TRANSIENT_CODES",
    "AcceptedRelease",
    "ReleaseRejected",
    "check_blobs",
    "check_manifest",
    "describe_keyring",
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
    "downgrade",
    "unknown_key_id",
    "bad_signature",
    "invalid_manifest",
    "wrong_model_set",
    "replayed",
    "stale_sequence",
    "chain_broken",
    "feature_mismatch",
    "bad_uri",
    "too_large",
    "missing_artifact",
    "sha_mismatch",
    "load_failed",
    "probe_mismatch",
)
#: Codes that may pass on a later attempt with the same bytes (an upload still under way).
TRANSIENT_CODES: frozenset[str] = frozenset({"missing_artifact"})

_ONNX_LOAD_PREFIX = "onnxruntime cannot load"


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


def fetch_blobs(
    manifest: ModelManifest, settings: Settings, *, client: Any = None
) -> dict[str, bytes]:
    """Download every artifact of a verified manifest and check its size and sha256.

    Raise `ReleaseRejected` (`bad_uri`, `too_large`, `missing_artifact`, `sha_mismatch`).
    """
    blobs: dict[str, bytes] = {}
    for art in manifest.artifacts:
        try:
            blob = fetch_artifact(art, settings, client=client)
        except ArtifactRefused as exc:
            raise _rejected(manifest, exc.code, exc.detail) from None
        except ObjectTooLargeError as exc:
            raise _rejected(manifest, "too_large", f"{art.family}: {exc}") from None
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
    last: AcceptedRelease | None = None,
) -> tuple[ModelManifest, ModelSet]:
    """Verify a manifest's bytes, download and load its models; return both.

    Blocking: run it in a worker thread. Raise `ReleaseRejected` on the first failed
    check (see the module docstring for the codes, in order).
    """
    manifest = check_manifest(
        raw, serving_sequence, keyring, model_set=model_set, settings=settings, last=last
    )
    blobs = fetch_blobs(manifest, settings)
    return manifest, load_checked(manifest, blobs)


def check_manifest(
    raw: bytes,
    serving_sequence: int,
    keyring: Keyring,
    *,
    model_set: str | None = None,
    settings: Settings | None = None,
    last: AcceptedRelease | None = None,
) -> ModelManifest:
    """Run the checks that need no download: `malformed` to `too_large`.

    `last` is the release this trader accepted last for the model set (anti-replay and
    the chain link); `settings` enables the artifact URI and size checks. Return the
    verified manifest; raise `ReleaseRejected` on the first failed check.
    """
    manifest = verified_manifest(raw, keyring)
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
    digest = hashlib.sha256(raw).hexdigest()
    if last is not None:
        _check_replay(manifest, digest, last)
    if manifest.sequence <= serving_sequence:
        raise _rejected(
            manifest,
            "stale_sequence",
            f"sequence {manifest.sequence} is not newer than {serving_sequence} (serving)",
        )
    if last is not None and digest != last.sha256:
        _check_link(manifest, last)
    for art in manifest.artifacts:
        _check_contract(art)
    if settings is not None:
        for art in manifest.artifacts:
            try:
                check_artifact(art, settings)
            except ArtifactRefused as exc:
                raise _rejected(manifest, exc.code, exc.detail) from None
    return manifest


def _check_replay(manifest: ModelManifest, digest: str, last: AcceptedRelease) -> None:
    if manifest.sequence < last.sequence:
        raise _rejected(
            manifest,
            "replayed",
            f"sequence {manifest.sequence} is older than {last.sequence} ({last.release}), "
            "accepted before",
        )
    if manifest.sequence == last.sequence and digest != last.sha256:
        raise _rejected(
            manifest,
            "replayed",
            f"sequence {manifest.sequence} was accepted before with other bytes ({last.release})",
        )


def _check_link(manifest: ModelManifest, last: AcceptedRelease) -> None:
    """Check the link to the previous manifest where this trader knows it.

    A manifest without a link predates the chain and is not checked; one that links
    past what this trader saw (it missed releases) cannot be, the signature decides.
    """
    prev = manifest.previous_sequence
    if prev is None:
        return
    if prev == last.sequence and manifest.previous_sha256 != last.sha256:
        raise _rejected(
            manifest,
            "chain_broken",
            f"links to sequence {prev} with sha256 {str(manifest.previous_sha256)[:16]}…, "
            f"accepted {last.sha256[:16]}…",
        )
    if prev < last.sequence:
        raise _rejected(
            manifest,
            "chain_broken",
            f"links to sequence {prev}, before {last.sequence} ({last.release}) accepted here: "
            "a fork",
        )


def load_checked(manifest: ModelManifest, blobs: Mapping[str, bytes]) -> ModelSet:
    """Load checked bytes into a `ModelSet` and score the probes (which also warms it).

    Raise `ReleaseRejected` (`load_failed`, `feature_mismatch`, `probe_mismatch`).
    """
    models = _load(manifest, blobs)
    _probe(manifest, models)
    return models


def describe_keyring(keyring: Keyring) -> dict[str, Any]:
    """Return the key ids this trader verifies with (never the keys) and what it accepts."""
    hmac_ok = keyring.accept_hmac and not keyring.requires_ed25519
    return {
        "hmac": sorted(keyring.hmac_keys) if hmac_ok else [],
        "ed25519": sorted(keyring.ed25519_public),
        "accepts": "ed25519" if keyring.requires_ed25519 else ("hmac" if hmac_ok else "nothing"),
        "hmac_releases_allowed": hmac_ok,
    }
