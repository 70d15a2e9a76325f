"""Storage: the object store (S3 or a local directory), the event lake, the Feast online store."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr

from infra.settings.base import SettingsContext, stack_state


class StoreSettings(SettingsContext):
    """Where objects, the lake and the online features live, and the S3 credentials."""

    title: ClassVar[str] = "Storage"
    effective: ClassVar[dict[str, str]] = {
        "s3_endpoint": "s3_endpoint",
        "lake": "lake",
        "store": "store_location",
    }

    s3_bucket: str = Field(
        default="",
        validation_alias="S3_BUCKET",
        description="Versioned bucket for models and the lake (seed name); empty and no endpoint: a local directory.",
    )
    s3_endpoint_url: str = Field(
        default="",
        validation_alias="S3_ENDPOINT_URL",
        description="S3 endpoint (MinIO, moto); empty: AWS, or the embedded stack's moto server.",
    )
    aws_region: str = Field(
        default="us-east-1", validation_alias="AWS_REGION", description="AWS region (seed name)."
    )
    aws_access_key_id: SecretStr = Field(
        default=SecretStr(""),
        validation_alias="AWS_ACCESS_KEY_ID",
        description="S3 access key (secret; seed name).",
    )
    aws_secret_access_key: SecretStr = Field(
        default=SecretStr(""),
        validation_alias="AWS_SECRET_ACCESS_KEY",
        description="S3 secret key (secret; seed name).",
    )
    lake_uri: str = Field(
        default="",
        validation_alias="LAKE_URI",
        description="Event lake root: `s3://bucket/prefix` or a local path; default `s3://$S3_BUCKET/lake` or `.tradeloop/lake`.",
    )
    store_dir: str = Field(
        default="",
        validation_alias="STORE_DIR",
        description="Local object-store directory when S3 is not configured; default `.tradeloop/store`.",
    )
    redis_url: str = Field(
        default="",
        validation_alias="REDIS_URL",
        description="Feast online store on Redis; empty: SQLite under the state directory.",
    )
    feast_repo_dir: str = Field(
        default="",
        validation_alias="FEAST_REPO_DIR",
        description="Feast repo directory; default the packaged `features/repo`.",
    )

    s3_connect_timeout_ms: int = Field(
        default=2000,
        gt=0,
        validation_alias="S3_CONNECT_TIMEOUT_MS",
        description="S3 connect timeout of every client (lake sink, hot swap, training).",
    )
    s3_read_timeout_ms: int = Field(
        default=10_000,
        gt=0,
        validation_alias="S3_READ_TIMEOUT_MS",
        description="S3 read timeout: the longest silence within one request before it fails.",
    )
    s3_max_attempts: int = Field(
        default=3,
        ge=1,
        validation_alias="S3_MAX_ATTEMPTS",
        description="Attempts per S3 request (botocore standard retries, with backoff).",
    )
    redis_timeout_ms: int = Field(
        default=2000,
        gt=0,
        validation_alias="REDIS_TIMEOUT_MS",
        description="Redis connect and command timeout of the online store (Feast pushes and reads).",
    )

    @property
    def s3_endpoint(self) -> str:
        """Return the S3 endpoint: env, else the embedded moto server, else ''."""
        if self.s3_endpoint_url:
            return self.s3_endpoint_url
        s3 = stack_state().get("s3") or {}
        return str(s3.get("endpoint") or "")

    @property
    def uses_s3(self) -> bool:
        """Say whether object storage is S3 (a bucket is set) or a local directory."""
        return bool(self.s3_bucket or self.s3_endpoint)

    @property
    def bucket(self) -> str:
        """Return the bucket name, defaulting to `tradeloop` on the embedded stack."""
        if self.s3_bucket:
            return self.s3_bucket
        s3 = stack_state().get("s3") or {}
        return str(s3.get("bucket") or "tradeloop")

    @property
    def store_root(self) -> Path:
        """Return the local object-store directory used when S3 is not configured."""
        return Path(self.store_dir).resolve() if self.store_dir else self.home / "store"

    @property
    def store_location(self) -> str:
        """Return where objects go: `s3://bucket` or the local directory."""
        return f"s3://{self.bucket}" if self.uses_s3 else str(self.store_root)

    @property
    def lake(self) -> str:
        """Return the event lake root: `s3://bucket/lake` or a local directory."""
        if self.lake_uri:
            return self.lake_uri
        if self.uses_s3:
            return f"s3://{self.bucket}/lake"
        return str(self.home / "lake")
