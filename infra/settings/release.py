"""Releases: the keys that sign and verify model manifests, and how often to poll them."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr

from infra.settings.base import SettingsContext


class ReleaseSettings(SettingsContext):
    """Manifest signing and verification keys, what a trader accepts, and the poll interval."""

    title: ClassVar[str] = "Releases"

    manifest_hmac_key: SecretStr = Field(
        default=SecretStr(""),
        validation_alias="MANIFEST_HMAC_KEY",
        description="HMAC-SHA256 key that signs releases (secret; seed name).",
    )
    manifest_key_id: str = Field(
        default="k1",
        validation_alias="MANIFEST_KEY_ID",
        description="Key id recorded with signatures made by MANIFEST_HMAC_KEY.",
    )
    manifest_verify_keys: SecretStr = Field(
        default=SecretStr(""),
        validation_alias="MANIFEST_VERIFY_KEYS",
        description="More HMAC verification keys as `id:key,id:key` for rotation (secret).",
    )
    manifest_ed25519_private_key: SecretStr = Field(
        default=SecretStr(""),
        validation_alias="MANIFEST_ED25519_PRIVATE_KEY",
        description="Optional Ed25519 signing key `id:base64` (secret; trainer only).",
    )
    manifest_ed25519_public_keys: str = Field(
        default="",
        validation_alias="MANIFEST_ED25519_PUBLIC_KEYS",
        description="Ed25519 verification keys `id:base64,...` (a trader can verify without a key that signs).",
    )
    model_poll_sec: float = Field(
        default=7200.0,
        gt=0,
        validation_alias="MODEL_POLL_SEC",
        description="Seconds between polls of `models/manifest/latest.json` (seed name; the topic is followed live).",
    )
    allow_hmac_releases: bool = Field(
        default=False,
        validation_alias="ALLOW_HMAC_RELEASES",
        description="Trader: accept HMAC-signed releases (weaker: anyone holding the key can sign; `/healthz` flags it).",
    )
    allow_unsigned_models: bool = Field(
        default=False,
        validation_alias="ALLOW_UNSIGNED_MODELS",
        description="Trader: serve MODELS_DIR/META_ONNX/EXEC_ONNX/RL_ONNX at start-up without a signed manifest covering them (shown on `/healthz`).",
    )
    models_manifest: str = Field(
        default="",
        validation_alias="MODELS_MANIFEST",
        description="Signed manifest covering the start-up models; default `MODELS_DIR/manifest.json`.",
    )
    max_artifact_bytes: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        validation_alias="MAX_ARTIFACT_BYTES",
        description="Largest model artifact a trader downloads (declared size checked first, download cut at it).",
    )
    cdn_base_url: str = Field(
        default="",
        validation_alias="CDN_BASE_URL",
        description="HTTPS base URL artifacts may also come from (untrusted: the signed sha256 decides).",
    )
    model_signing_key: str = Field(
        default="",
        validation_alias="MODEL_SIGNING_KEY",
        description="Trainer: PEM file of an ECDSA (P-256/384/521) private key; set, each artifact gets an OpenSSF model-signing bundle `model.sig` beside it.",
    )
    release_state_path: str = Field(
        default="",
        validation_alias="RELEASE_STATE_PATH",
        description="Trader: file holding the highest accepted release per model set (anti-replay); default `.tradeloop/release-state.json`.",
    )

    @property
    def release_state_file(self) -> Path:
        """Return the anti-replay state file (`RELEASE_STATE_PATH`, default under the home)."""
        return (
            Path(self.release_state_path)
            if self.release_state_path
            else self.home / "release-state.json"
        )
