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
        default=("ES", "NQ"),
        validation_alias="SYMBOLS",
        description="Comma-separated symbols to trade and train (seed: `ES,NQ`).",
    )
    instruments_json: str = Field(
        default="",
        validation_alias="INSTRUMENTS_JSON",
        description='Extra instruments as JSON, e.g. `{"MES": {"tick_size": 0.25, "tick_value_usd": 1.25}}`; ES and NQ are built in.',
    )

    # Kafka
    kafka_bootstrap_servers: str = Field(
        default="",
        validation_alias="KAFKA_BOOTSTRAP_SERVERS",
        description="Kafka brokers; empty: the embedded stack's broker (`.tradeloop/stack.json`), else `localhost:9092`.",
    )
    topic_prefix: str = Field(
        default="tradeloop.",
        validation_alias="TOPIC_PREFIX",
        description="Prefix of every topic name.",
    )
    topic_partitions: int = Field(
        default=4,
        ge=1,
        validation_alias="TOPIC_PARTITIONS",
        description="Partitions of created topics (`models` always has one).",
    )
    kafka_request_timeout_ms: int = Field(
        default=10_000,
        validation_alias="KAFKA_REQUEST_TIMEOUT_MS",
        description="Kafka request timeout.",
    )
    kafka_session_timeout_ms: int = Field(
        default=10_000,
        validation_alias="KAFKA_SESSION_TIMEOUT_MS",
        description="Consumer-group session timeout.",
    )
    retention_ms: int = Field(
        default=7 * 24 * 3600 * 1000,
        validation_alias="TOPIC_RETENTION_MS",
        description="Retention of the non-compacted topics.",
    )

    # Object storage (S3 or a local directory)
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
    cdn_base_url: str = Field(
        default="",
        validation_alias="CDN_BASE_URL",
        description="Optional public base URL for model downloads (seed name); informational.",
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

    # Feature store
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

    # Models and manifests
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
    rl_enabled: bool = Field(
        default=True,
        validation_alias="RL_ENABLED",
        description="Use the RL position sizer (seed name); off: multiplier 1.0.",
    )
    rl_onnx: str = Field(
        default="",
        validation_alias="RL_ONNX",
        description="Path of an RL sizer ONNX file to serve at start (seed name).",
    )
    meta_onnx: str = Field(
        default="",
        validation_alias="META_ONNX",
        description="Path of a meta classifier ONNX file to serve at start.",
    )
    exec_onnx: str = Field(
        default="",
        validation_alias="EXEC_ONNX",
        description="Path of an execution-quality ONNX file to serve at start.",
    )
    models_dir: str = Field(
        default="",
        validation_alias="MODELS_DIR",
        description="Directory of ONNX files to serve at start (`{family}.onnx` or `{family}/{version}/`).",
    )
    canary_mode: Literal["off", "shadow", "canary"] = Field(
        default="off",
        validation_alias="CANARY_MODE",
        description="`off`, `shadow` (score beside the champion) or `canary` (challenger decides a share).",
    )
    canary_share: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        validation_alias="CANARY_SHARE",
        description="Share of decisions the challenger takes in canary mode.",
    )
    canary_min_decisions: int = Field(
        default=50,
        ge=1,
        validation_alias="CANARY_MIN_DECISIONS",
        description="Resolved challenger decisions before a canary verdict.",
    )
    canary_window_sec: float = Field(
        default=1800.0,
        gt=0,
        validation_alias="CANARY_WINDOW_SEC",
        description="Longest canary trial before a verdict.",
    )

    # Training
    train_every: str = Field(
        default="30m",
        validation_alias="TRAIN_EVERY",
        description="Training cadence for `tradeloop train --every` (seed: 30 minutes).",
    )
    skip_training_file: str = Field(
        default="SKIP_TRAINING",
        validation_alias="SKIP_TRAINING_FILE",
        description="A file whose presence skips scheduled training (the seed's skip switch).",
    )
    train_profile: Literal["standard", "small"] = Field(
        default="standard",
        validation_alias="TRAIN_PROFILE",
        description="`standard` model sizes or `small` (tests and the demo).",
    )
    train_source_weights: str = Field(
        default="real:1.0,vendor:0.5,synthetic:0.25",
        validation_alias="TRAIN_SOURCE_WEIGHTS",
        description="Sample weights per source, `real:1,vendor:0.5,synthetic:0.25`.",
    )
    train_vendor_data: str = Field(
        default="",
        validation_alias="TRAIN_VENDOR_DATA",
        description="Vendor bar files (CSV/parquet, comma-separated) backtested into training data.",
    )
    train_synthetic_bars: int = Field(
        default=0,
        ge=0,
        validation_alias="TRAIN_SYNTHETIC_BARS",
        description="Simulated bars backtested into training data (0: none).",
    )
    train_report_dir: str = Field(
        default="",
        validation_alias="TRAIN_REPORT_DIR",
        description="Where training run reports go; default `.tradeloop/reports/training`.",
    )

    # Trader risk
    base_risk_usd: float = Field(
        default=500.0,
        gt=0,
        validation_alias="BASE_RISK_USD",
        description="Dollar risk of a 1.0x position (contracts = risk / stop distance x multiplier).",
    )
    max_contracts_per_symbol: int = Field(
        default=4,
        ge=1,
        validation_alias="MAX_CONTRACTS_PER_SYMBOL",
        description="Contract cap per symbol.",
    )
    max_open_positions: int = Field(
        default=2,
        ge=1,
        validation_alias="MAX_OPEN_POSITIONS",
        description="Open positions across symbols.",
    )
    max_daily_loss_usd: float = Field(
        default=2000.0,
        gt=0,
        validation_alias="MAX_DAILY_LOSS_USD",
        description="Realised loss that halts new entries for the day.",
    )
    loss_streak_cooldown: int = Field(
        default=3,
        ge=1,
        validation_alias="LOSS_STREAK_COOLDOWN",
        description="Consecutive losses that start a cooldown.",
    )
    cooldown_bars: int = Field(
        default=15,
        ge=0,
        validation_alias="COOLDOWN_BARS",
        description="Bars without new entries after a loss streak.",
    )
    flatten_at_session_end: bool = Field(
        default=True,
        validation_alias="FLATTEN_AT_SESSION_END",
        description="Close open positions at the end of the RTH session.",
    )
    slippage_ticks: float = Field(
        default=1.0,
        ge=0,
        validation_alias="SLIPPAGE_TICKS",
        description="Paper fills: ticks of slippage against the order.",
    )
    commission_per_contract_usd: float = Field(
        default=2.25,
        ge=0,
        validation_alias="COMMISSION_PER_CONTRACT_USD",
        description="Paper fills: commission per contract per side.",
    )
    outbox_dir: str = Field(
        default="",
        validation_alias="OUTBOX_DIR",
        description="The trader's durable spool; default `.tradeloop/outbox`.",
    )
    emit_bars: bool = Field(
        default=False,
        validation_alias="EMIT_BARS",
        description="Also publish every bar to the `bars` topic.",
    )

    # HTTP
    http_host: str = Field(
        default="127.0.0.1",
        validation_alias="HTTP_HOST",
        description="Bind address of the trader API and the workers' metrics.",
    )
    http_port: int = Field(
        default=8080, validation_alias="HTTP_PORT", description="Port of the trader's HTTP API."
    )

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


def settings_env(settings: Settings) -> dict[str, str]:
    """Return this process's environment changed to reproduce `settings` in a subprocess."""
    env = dict(os.environ)
    for name, fld in Settings.model_fields.items():
        alias = fld.validation_alias
        if not isinstance(alias, str):
            continue
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, tuple):
            value = ",".join(value)
        if isinstance(value, bool):
            value = "1" if value else "0"
        if value in ("", None):
            env.pop(alias, None)
        else:
            env[alias] = str(value)
    return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (read once)."""
    return Settings()
