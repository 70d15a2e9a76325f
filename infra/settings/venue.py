"""Venues: which venue routes orders, and the paper venue's fill costs."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from infra.settings.base import SettingsContext


class VenueSettings(SettingsContext):
    """The venue that routes the trader's orders and the paper venue's fill model.

    A live venue's own options (accounts, credentials) live in a settings class
    next to its adapter in `trader/venues/`.
    """

    title: ClassVar[str] = "Venues"

    venue: str = Field(
        default="paper",
        validation_alias="VENUE",
        description="Venue that routes the trader's orders, by name; `paper` simulates fills on bars.",
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
    ib_host: str = Field(
        default="127.0.0.1",
        validation_alias="IB_HOST",
        description="Interactive Brokers: host of TWS or IB Gateway (`--venue ib`).",
    )
    ib_port: int = Field(
        default=4002,
        gt=0,
        lt=65536,
        validation_alias="IB_PORT",
        description="Interactive Brokers: API port (Gateway 4001 live / 4002 paper, TWS 7496 / 7497).",
    )
    ib_client_id: int = Field(
        default=1,
        ge=0,
        validation_alias="IB_CLIENT_ID",
        description="Interactive Brokers: API client id of the trader (unique per connection).",
    )
    ib_account: str = Field(
        default="",
        validation_alias="IB_ACCOUNT",
        description="Interactive Brokers: account that orders go to (empty: the only managed one).",
    )
    ib_silence_timeout_s: float = Field(
        default=30.0,
        ge=0,
        validation_alias="IB_SILENCE_TIMEOUT_S",
        description="Interactive Brokers: seconds an open API connection (venue or feed) may receive nothing (after a third of them the gateway's clock is asked) before it is closed and reconnected; 0: never.",
    )
    projectx_api_url: str = Field(
        default="https://api.topstepx.com",
        validation_alias="PROJECTX_API_URL",
        description="ProjectX Gateway (TopstepX): base URL of the REST API (`--venue projectx`).",
    )
    projectx_user_hub_url: str = Field(
        default="",
        validation_alias="PROJECTX_USER_HUB_URL",
        description="ProjectX Gateway: websocket URL of the real-time user hub (TopstepX: wss://rtc.topstepx.com/hubs/user; empty: the API URL's host with /hubs/user).",
    )
    projectx_market_hub_url: str = Field(
        default="",
        validation_alias="PROJECTX_MARKET_HUB_URL",
        description="ProjectX Gateway: websocket URL of the market hub for `--feed projectx` (TopstepX: wss://rtc.topstepx.com/hubs/market; empty: the user hub's host with /hubs/market).",
    )
    projectx_username: str = Field(
        default="",
        validation_alias="PROJECTX_USERNAME",
        description="ProjectX Gateway: user name that logs in with the API key.",
    )
    projectx_api_key: SecretStr = Field(
        default=SecretStr(""),
        validation_alias="PROJECTX_API_KEY",
        description="ProjectX Gateway: API key (secret).",
    )
    projectx_account: str = Field(
        default="",
        validation_alias="PROJECTX_ACCOUNT",
        description="ProjectX Gateway: account name or id that orders go to (empty: the only active one).",
    )
    projectx_silence_timeout_s: float = Field(
        default=30.0,
        ge=0,
        validation_alias="PROJECTX_SILENCE_TIMEOUT_S",
        description="ProjectX Gateway: seconds an open hub (the venue's user hub, the feed's market hub) may receive nothing (pings every 15 s) before it is closed and reconnected; 0: never.",
    )
    topstepx_enable_nq: bool = Field(
        default=False,
        validation_alias="TOPSTEPX_ENABLE_NQ",
        description="ProjectX Gateway: allow NQ brackets (off: they are rejected with this setting's name).",
    )
    rithmic_url: str = Field(
        default="wss://rituz00100.rithmic.com:443",
        validation_alias="RITHMIC_URL",
        description="Rithmic: websocket URL of the gateway (`--venue rithmic`; TLS only, wss://).",
    )
    rithmic_user: str = Field(
        default="",
        validation_alias="RITHMIC_USER",
        description="Rithmic: user name that logs in to the order and PnL plants.",
    )
    rithmic_password: SecretStr = Field(
        default=SecretStr(""),
        validation_alias="RITHMIC_PASSWORD",
        description="Rithmic: password (secret).",
    )
    rithmic_system: str = Field(
        default="Rithmic Test",
        validation_alias="RITHMIC_SYSTEM",
        description="Rithmic: system name to log in to, one of the gateway's RequestRithmicSystemInfo list (e.g. Rithmic Paper Trading, TopstepTrader, Apex).",
    )
    rithmic_app_name: str = Field(
        default="tradeloop",
        validation_alias="RITHMIC_APP_NAME",
        description="Rithmic: application name sent at login (the one Rithmic approved at conformance).",
    )
    rithmic_app_version: str = Field(
        default="0.1.0",
        validation_alias="RITHMIC_APP_VERSION",
        description="Rithmic: application version sent at login.",
    )
    rithmic_account: str = Field(
        default="",
        validation_alias="RITHMIC_ACCOUNT",
        description="Rithmic: account id that orders go to (empty: the only one of the login).",
    )
    rithmic_exchange: str = Field(
        default="CME",
        validation_alias="RITHMIC_EXCHANGE",
        description="Rithmic: exchange of the traded futures (its trade route is picked from the login's routes).",
    )
    rithmic_ca_file: str = Field(
        default="",
        validation_alias="RITHMIC_CA_FILE",
        description="Rithmic: extra CA certificate (PEM) the gateway's TLS certificate may chain to, besides the one async_rithmic bundles (a local simulator's; empty for Rithmic's own gateways).",
    )
    rithmic_commission_usd: float = Field(
        default=0.0,
        ge=0,
        validation_alias="RITHMIC_COMMISSION_USD",
        description="Rithmic: commission per contract per fill put on fills (Rithmic fill notifications carry no fees; set your all-in rate).",
    )
    rithmic_silence_timeout_s: float = Field(
        default=0.0,
        ge=0,
        validation_alias="RITHMIC_SILENCE_TIMEOUT_S",
        description="Rithmic: seconds a plant's open websocket may receive nothing (no heartbeat answer, update or tick) before the venue or feed closes it and logs in again; 0: 3 heartbeat intervals (the interval the gateway names at login); a value under 2 intervals is raised to 2.",
    )
