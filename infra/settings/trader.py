"""The trader: risk limits, its durable spool, bar publishing and its HTTP API."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr

from infra.settings.base import SettingsContext


class TraderSettings(SettingsContext):
    """Risk limits and the trader process's spool and HTTP API."""

    title: ClassVar[str] = "Trader"

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
    roll_days_before_expiry: int = Field(
        default=8,
        ge=0,
        le=60,
        validation_alias="ROLL_DAYS_BEFORE_EXPIRY",
        description="Calendar days before a quarterly contract's expiry (third Friday) when bars and orders move to the next contract (8: the Thursday of the week before).",
    )
    prop_start_balance_usd: float = Field(
        default=50_000.0,
        gt=0,
        validation_alias="PROP_START_BALANCE_USD",
        description="Prop-firm rules: the account's starting balance (the Maximum Loss Limit never trails above it).",
    )
    prop_max_loss_limit_usd: float = Field(
        default=0.0,
        ge=0,
        validation_alias="PROP_MAX_LOSS_LIMIT_USD",
        description="TopstepX Maximum Loss Limit: the floor trails this far below the end-of-day balance high; a breach triggers the kill switch (0: off).",
    )
    prop_daily_loss_limit_usd: float = Field(
        default=0.0,
        ge=0,
        validation_alias="PROP_DAILY_LOSS_LIMIT_USD",
        description="TopstepX Daily Loss Limit: the day's net PnL (realised + open) that triggers the kill switch until the next trading day (0: off).",
    )
    trader_api_token: SecretStr = Field(
        default=SecretStr(""),
        validation_alias="TRADER_API_TOKEN",
        description="Bearer token of the trader API's `POST /kill` and `POST /resume` (secret; unset: both refuse every request).",
    )
    trader_api_docs: bool = Field(
        default=False,
        validation_alias="TRADER_API_DOCS",
        description="Serve the trader API's `/docs`, `/redoc` and `/openapi.json` (off: they are 404).",
    )
    outbox_dir: str = Field(
        default="",
        validation_alias="OUTBOX_DIR",
        description="The trader's durable spool; default `.tradeloop/outbox`.",
    )
    outbox_fsync: Literal["always", "interval", ""] = Field(
        default="",
        validation_alias="OUTBOX_FSYNC",
        description="When the spool fsyncs: `always` (every append) or `interval` (once a second); empty: `always` on a live venue, `interval` on paper.",
    )
    emit_bars: bool = Field(
        default=False,
        validation_alias="EMIT_BARS",
        description="Also publish every bar to the `bars` topic.",
    )
    http_host: str = Field(
        default="127.0.0.1",
        validation_alias="HTTP_HOST",
        description="Bind address of the trader API and the workers' metrics.",
    )
    http_port: int = Field(
        default=8080, validation_alias="HTTP_PORT", description="Port of the trader's HTTP API."
    )
