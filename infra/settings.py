"""Typed settings from environment variables and an optional `.env`."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

STATE_FILE_NAME = "stack.json"


def home_dir() -> Path:
    """Return the directory that holds the stack state, lake and models by default."""
    return Path(os.environ.get("TRADELOOP_HOME", ".tradeloop")).resolve()


def stack_state() -> dict[str, Any]:
    """Return what `tradeloop stack up` recorded, or an empty dict."""
    path = home_dir() / STATE_FILE_NAME
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


class Settings(BaseSettings):
    """Every knob of tradeloop; names follow the seed design where it has one."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # Markets
    symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("ES", "NQ"), validation_alias="SYMBOLS"
    )
    instruments_json: str = Field(default="", validation_alias="INSTRUMENTS_JSON")

    # Kafka
    kafka_bootstrap_servers: str = Field(default="", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    topic_prefix: str = Field(default="tradeloop.", validation_alias="TOPIC_PREFIX")
    topic_partitions: int = Field(default=4, ge=1, validation_alias="TOPIC_PARTITIONS")
    kafka_request_timeout_ms: int = Field(
        default=10_000, validation_alias="KAFKA_REQUEST_TIMEOUT_MS"
    )
    kafka_session_timeout_ms: int = Field(
        default=10_000, validation_alias="KAFKA_SESSION_TIMEOUT_MS"
    )
    retention_ms: int = Field(default=7 * 24 * 3600 * 1000, validation_alias="TOPIC_RETENTION_MS")

    # Object storage (S3 or a local directory)
    s3_bucket: str = Field(default="", validation_alias="S3_BUCKET")
    s3_endpoint_url: str = Field(default="", validation_alias="S3_ENDPOINT_URL")
    aws_region: str = Field(default="us-east-1", validation_alias="AWS_REGION")
    aws_access_key_id: SecretStr = Field(
        default=SecretStr(""), validation_alias="AWS_ACCESS_KEY_ID"
    )
    aws_secret_access_key: SecretStr = Field(
        default=SecretStr(""), validation_alias="AWS_SECRET_ACCESS_KEY"
    )
    cdn_base_url: str = Field(default="", validation_alias="CDN_BASE_URL")
    lake_uri: str = Field(default="", validation_alias="LAKE_URI")
    store_dir: str = Field(default="", validation_alias="STORE_DIR")

    # Feature store
    redis_url: str = Field(default="", validation_alias="REDIS_URL")
    feast_repo_dir: str = Field(default="", validation_alias="FEAST_REPO_DIR")

    # Models and manifests
    manifest_hmac_key: SecretStr = Field(
        default=SecretStr(""), validation_alias="MANIFEST_HMAC_KEY"
    )
    manifest_key_id: str = Field(default="k1", validation_alias="MANIFEST_KEY_ID")
    manifest_verify_keys: SecretStr = Field(
        default=SecretStr(""), validation_alias="MANIFEST_VERIFY_KEYS"
    )
    manifest_ed25519_private_key: SecretStr = Field(
        default=SecretStr(""), validation_alias="MANIFEST_ED25519_PRIVATE_KEY"
    )
    manifest_ed25519_public_keys: str = Field(
        default="", validation_alias="MANIFEST_ED25519_PUBLIC_KEYS"
    )
    model_poll_sec: float = Field(default=7200.0, gt=0, validation_alias="MODEL_POLL_SEC")
    rl_enabled: bool = Field(default=True, validation_alias="RL_ENABLED")
    rl_onnx: str = Field(default="", validation_alias="RL_ONNX")
    meta_onnx: str = Field(default="", validation_alias="META_ONNX")
    exec_onnx: str = Field(default="", validation_alias="EXEC_ONNX")
    models_dir: str = Field(default="", validation_alias="MODELS_DIR")
    canary_mode: Literal["off", "shadow", "canary"] = Field(
        default="off", validation_alias="CANARY_MODE"
    )
    canary_share: float = Field(default=0.2, ge=0.0, le=1.0, validation_alias="CANARY_SHARE")
    canary_min_decisions: int = Field(default=50, ge=1, validation_alias="CANARY_MIN_DECISIONS")
    canary_window_sec: float = Field(default=1800.0, gt=0, validation_alias="CANARY_WINDOW_SEC")

    # Training
    train_every: str = Field(default="30m", validation_alias="TRAIN_EVERY")
    skip_training_file: str = Field(default="SKIP_TRAINING", validation_alias="SKIP_TRAINING_FILE")
    train_profile: Literal["standard", "small"] = Field(
        default="standard", validation_alias="TRAIN_PROFILE"
    )
    train_source_weights: str = Field(
        default="real:1.0,vendor:0.5,synthetic:0.25", validation_alias="TRAIN_SOURCE_WEIGHTS"
    )
    train_vendor_data: str = Field(default="", validation_alias="TRAIN_VENDOR_DATA")
    train_synthetic_bars: int = Field(default=0, ge=0, validation_alias="TRAIN_SYNTHETIC_BARS")
    train_report_dir: str = Field(default="", validation_alias="TRAIN_REPORT_DIR")

    # Trader risk
    base_risk_usd: float = Field(default=500.0, gt=0, validation_alias="BASE_RISK_USD")
    max_contracts_per_symbol: int = Field(
        default=4, ge=1, validation_alias="MAX_CONTRACTS_PER_SYMBOL"
    )
    max_open_positions: int = Field(default=2, ge=1, validation_alias="MAX_OPEN_POSITIONS")
    max_daily_loss_usd: float = Field(default=2000.0, gt=0, validation_alias="MAX_DAILY_LOSS_USD")
    loss_streak_cooldown: int = Field(default=3, ge=1, validation_alias="LOSS_STREAK_COOLDOWN")
    cooldown_bars: int = Field(default=15, ge=0, validation_alias="COOLDOWN_BARS")
    flatten_at_session_end: bool = Field(default=True, validation_alias="FLATTEN_AT_SESSION_END")
    slippage_ticks: float = Field(default=1.0, ge=0, validation_alias="SLIPPAGE_TICKS")
    commission_per_contract_usd: float = Field(
        default=2.25, ge=0, validation_alias="COMMISSION_PER_CONTRACT_USD"
    )
    outbox_dir: str = Field(default="", validation_alias="OUTBOX_DIR")
    emit_bars: bool = Field(default=False, validation_alias="EMIT_BARS")

    # HTTP
    http_host: str = Field(default="127.0.0.1", validation_alias="HTTP_HOST")
    http_port: int = Field(default=8080, validation_alias="HTTP_PORT")

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(s.strip().upper() for s in value.split(",") if s.strip())
        return value

    # Derived locations -------------------------------------------------

    @property
    def home(self) -> Path:
        """Return the state directory (`TRADELOOP_HOME`, default `.tradeloop`)."""
        return home_dir()

    @property
    def bootstrap_servers(self) -> str:
        """Return the broker: env, else the embedded stack, else localhost:9092."""
        if self.kafka_bootstrap_servers:
            return self.kafka_bootstrap_servers
        kafka = stack_state().get("kafka") or {}
        return str(kafka.get("bootstrap") or "localhost:9092")

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
    def lake(self) -> str:
        """Return the event lake root: `s3://bucket/lake` or a local directory."""
        if self.lake_uri:
            return self.lake_uri
        if self.uses_s3:
            return f"s3://{self.bucket}/lake"
        return str(self.home / "lake")

    def topic(self, name: str) -> str:
        """Return the full topic name for a short name such as `bars`."""
        return f"{self.topic_prefix}{name}"

    def masked(self) -> dict[str, Any]:
        """Return the effective settings with every secret masked."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                raw = value.get_secret_value()
                value = mask_secret(raw)
            elif isinstance(value, tuple):
                value = ",".join(value)
            out[name] = value
        out["bootstrap_servers (effective)"] = self.bootstrap_servers
        out["s3_endpoint (effective)"] = self.s3_endpoint or "(none: local directory)"
        out["lake (effective)"] = self.lake
        out["store (effective)"] = f"s3://{self.bucket}" if self.uses_s3 else str(self.store_root)
        return out


def mask_secret(raw: str) -> str:
    """Return a masked form of a secret: whether it is set, nothing more."""
    return "********" if raw else "(unset)"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (read once)."""
    return Settings()
