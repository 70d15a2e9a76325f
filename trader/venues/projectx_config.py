"""The `projectx` venue's settings and session helpers: login, the hub's stop, the account.

`ProjectxVenueSettings` holds where the Gateway is and who logs in
(`PROJECTX_API_URL`, `PROJECTX_USER_HUB_URL`, `PROJECTX_MARKET_HUB_URL`,
`PROJECTX_USERNAME`, `PROJECTX_API_KEY`, `PROJECTX_ACCOUNT`, `TOPSTEPX_ENABLE_NQ`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from infra.settings import Settings

__all__ = ["ProjectxVenueSettings", "login_key", "pick_account", "stop_hub_quietly"]

# signalrcore logs the hub URL, whose query carries the session token, at DEBUG
logging.getLogger("SignalRCoreClient").setLevel(logging.INFO)


class ProjectxVenueSettings(BaseModel):
    """Where the Gateway is and which account trades (`PROJECTX_API_URL`, ...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    api_url: str = "https://api.topstepx.com"
    user_hub_url: str = ""  # empty: the API URL's host with `/hubs/user`
    market_hub: str = ""  # empty: the user hub's host with `/hubs/market`
    username: str = ""
    api_key: SecretStr = SecretStr("")
    account: str = ""  # name or id; empty: the only active account
    enable_nq: bool = False
    request_timeout_s: float = Field(default=10.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    token_refresh_s: float = Field(default=12 * 3600.0, gt=0)
    reconnect_delays_s: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
    #: seconds a hub may receive nothing before it is dead (0: never; `projectx_watch`)
    silence_timeout_s: float = Field(default=30.0, ge=0)
    keepalive_s: float = Field(default=15.0, gt=0)  # our pings to the hub
    watch_s: float = Field(default=0.25, gt=0)  # how often the watch looks

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ProjectxVenueSettings:
        """Return the ProjectX settings of the process settings."""
        values: dict[str, Any] = {
            "api_url": settings.projectx_api_url,
            "user_hub_url": settings.projectx_user_hub_url,
            "market_hub": settings.projectx_market_hub_url,
            "username": settings.projectx_username,
            "api_key": settings.projectx_api_key,
            "account": settings.projectx_account,
            "enable_nq": settings.topstepx_enable_nq,
            "silence_timeout_s": settings.projectx_silence_timeout_s,
        }
        return cls(**{**values, **overrides})

    @property
    def market_hub_url(self) -> str:
        """Return the market hub's websocket URL."""
        if self.market_hub:
            return self.market_hub
        return self.hub_url.removesuffix("/hubs/user") + "/hubs/market"

    @property
    def hub_url(self) -> str:
        """Return the user hub's websocket URL."""
        if self.user_hub_url:
            return self.user_hub_url
        base = self.api_url.rstrip("/").replace("https://", "wss://").replace("http://", "ws://")
        return f"{base}/hubs/user"


def login_key(api_url: str, username: str, api_key: SecretStr, timeout_s: float) -> str:
    """Return a session token from `/api/Auth/loginKey` (blocking; run it in a thread)."""
    answer = requests.post(
        f"{api_url.rstrip('/')}/api/Auth/loginKey",
        json={"userName": username, "apiKey": api_key.get_secret_value()},
        timeout=timeout_s,
    )
    answer.raise_for_status()
    body = answer.json()
    if not body.get("success") or not body.get("token"):
        raise ConnectionError(
            f"projectx: login of {username!r} refused: {body.get('errorMessage')}"
        )
    return str(body["token"])


def stop_hub_quietly(hub: Any) -> None:
    """Stop a hub connection off the event loop (its close handshake waits up to 3 s)."""

    def stop() -> None:
        with contextlib.suppress(Exception):
            hub.stop()

    threading.Thread(target=stop, daemon=True).start()


def pick_account(accounts: list[Any], wanted: str) -> int:
    """Return the id of the account named (or numbered) `wanted`, or of the only one."""
    if wanted:
        for a in accounts:
            if wanted in (str(a.name), str(a.id)):
                return int(a.id)
        raise ConnectionError(f"projectx: no active account {wanted!r}")
    if len(accounts) != 1:
        names = ", ".join(str(a.name) for a in accounts) or "none"
        raise ConnectionError(f"projectx: set PROJECTX_ACCOUNT to one of: {names}")
    return int(accounts[0].id)
