"""Releases: the keys that sign and verify model manifests, and how often to poll them."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from infra.settings.base import SettingsContext


class ReleaseSettings(SettingsContext):
    """Manifest signing and verification keys, and the manifest poll interval."""

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
