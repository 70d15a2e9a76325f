"""Training: cadence, model sizes and where training data comes from."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr

from infra.contracts.vocab import PitEngine
from infra.settings.base import SettingsContext


class TrainingSettings(SettingsContext):
    """The trainer's schedule, profile, data sources and reports."""

    title: ClassVar[str] = "Training"

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
    train_params_file: str = Field(
        default="",
        validation_alias="TRAIN_PARAMS_FILE",
        description="A tuned training profile (JSON from `tradeloop tune`) read over the profile's defaults.",
    )
    train_embargo_min: float = Field(
        default=15.0,
        ge=0.0,
        validation_alias="TRAIN_EMBARGO_MIN",
        description="Walk-forward embargo: training labels must close this many minutes before a test fold.",
    )
    gate_confidence: float = Field(
        default=0.9,
        ge=0.5,
        lt=1.0,
        validation_alias="GATE_CONFIDENCE",
        description="Confidence a challenger's holdout sized R must beat the champion's with.",
    )
    gate_test: Literal["paired_t", "bootstrap"] = Field(
        default="paired_t",
        validation_alias="GATE_TEST",
        description="The gate's one-sided paired test on per-decision sized R.",
    )
    optuna_storage: SecretStr = Field(
        default=SecretStr(""),
        validation_alias="OPTUNA_STORAGE",
        description="Optuna storage URL for `tradeloop tune` (postgresql://...); default SQLite in the home.",
    )
    train_ray_address: str = Field(
        default="",
        validation_alias="TRAIN_RAY_ADDRESS",
        description="Ray cluster that runs the fits and trials of `tradeloop train`/`tune` (`auto` or HOST:PORT); empty: this process.",
    )
    train_pit_engine: PitEngine = Field(
        default="duckdb",
        validation_alias="TRAIN_PIT_ENGINE",
        description="Point-in-time dataset engine: `duckdb` (out of core), `asof` (pandas), `feast`, or `auto` (Feast while small, else `asof`).",
    )
    train_duckdb_memory_mb: int = Field(
        default=2048,
        ge=64,
        validation_alias="TRAIN_DUCKDB_MEMORY_MB",
        description="Memory the `duckdb` dataset engine may hold before it spills to disk (MB).",
    )
    train_report_dir: str = Field(
        default="",
        validation_alias="TRAIN_REPORT_DIR",
        description="Where training run reports go; default `.tradeloop/reports/training`.",
    )
