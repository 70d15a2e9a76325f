"""The start-up models' trust check: a signed manifest must cover MODELS_DIR / *_ONNX files.

A trader that starts from files on disk (`--models-dir`, `MODELS_DIR`, `META_ONNX`,
`EXEC_ONNX`, `RL_ONNX`) serves them only when a signed manifest lists each file's
sha256 (`MODELS_MANIFEST`, default `{models dir}/manifest.json`, verified like any
release: `trader.delivery.trust`), or when ALLOW_UNSIGNED_MODELS=1 says so (shown on
`/healthz`). Otherwise it refuses to start (`unsigned_models`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path

from infra.contracts import ModelManifest
from infra.settings import Settings
from infra.signing import Keyring
from trader.delivery.trust import ReleaseRejected, verified_manifest

__all__ = ["UnsignedModelsError", "covering_manifest", "release_trust"]


class UnsignedModelsError(ValueError):
    """Raise when start-up models are not covered by a signed manifest (`unsigned_models`)."""

    code = "unsigned_models"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(
            f"unsigned_models: {detail} (set ALLOW_UNSIGNED_MODELS=1 to serve them anyway)"
        )


def release_trust(settings: Settings) -> dict[str, object]:
    """Return what `/healthz` shows of the release trust: the weaker modes that are on."""
    keyring = Keyring.for_trader(settings)
    weaker = [
        name
        for name, on in (
            ("ALLOW_HMAC_RELEASES", settings.allow_hmac_releases and not keyring.requires_ed25519),
            ("ALLOW_UNSIGNED_MODELS", settings.allow_unsigned_models),
        )
        if on
    ]
    return {
        "accepts": "ed25519"
        if keyring.requires_ed25519
        else ("hmac" if settings.allow_hmac_releases else "nothing"),
        "ed25519_key_ids": sorted(keyring.ed25519_public),
        "hmac_releases_allowed": settings.allow_hmac_releases and not keyring.requires_ed25519,
        "unsigned_models_allowed": settings.allow_unsigned_models,
        "weaker": weaker,
    }


def covering_manifest(
    blobs: Mapping[str, bytes], settings: Settings, models_dir: str | Path | None
) -> ModelManifest:
    """Return the verified manifest that lists every blob's sha256; raise `UnsignedModelsError`."""
    if settings.models_manifest:
        path = Path(settings.models_manifest)
    elif models_dir:
        path = Path(models_dir) / "manifest.json"
    else:
        raise UnsignedModelsError("META_ONNX/EXEC_ONNX/RL_ONNX need MODELS_MANIFEST")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UnsignedModelsError(f"no signed manifest at {path} ({exc.strerror})") from None
    try:
        manifest = verified_manifest(raw, Keyring.for_trader(settings))
    except ReleaseRejected as rej:
        raise UnsignedModelsError(f"{path}: {rej.code}: {rej.detail}") from None
    for family, blob in sorted(blobs.items()):
        art = manifest.artifact(family)
        if art is None:
            raise UnsignedModelsError(f"{path} (release {manifest.release}) lists no {family}")
        digest = hashlib.sha256(blob).hexdigest()
        if not hmac.compare_digest(digest, art.sha256):
            raise UnsignedModelsError(
                f"{family}: sha256 {digest[:16]}… is not the {art.sha256[:16]}… "
                f"release {manifest.release} lists"
            )
    return manifest
