"""The `rithmic` venue's settings, its `RithmicClient` and the secret-free logging of async_rithmic.

`RithmicVenueSettings` holds where the gateway is and who logs in (`RITHMIC_URL`,
`RITHMIC_USER`, `RITHMIC_PASSWORD`, `RITHMIC_SYSTEM`, `RITHMIC_APP_NAME`,
`RITHMIC_APP_VERSION`, `RITHMIC_ACCOUNT`, `RITHMIC_EXCHANGE`, `RITHMIC_CA_FILE`,
`RITHMIC_COMMISSION_USD`, `RITHMIC_SILENCE_TIMEOUT_S`).

async_rithmic logs every request it sends at DEBUG (the login's password
included) and, when the gateway refuses a request, the request itself at ERROR.
`redact_rithmic_logs` puts a filter on its loggers that masks the password in
every record, whatever the level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

from async_rithmic import ReconnectionSettings, RetrySettings, RithmicClient
from async_rithmic.enums import OrderPlacement
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from websockets.protocol import State

from infra.settings import Settings

__all__ = [
    "RithmicVenueSettings",
    "connect_plants",
    "new_client",
    "pick_account",
    "quiet_disconnect",
    "redact_rithmic_logs",
]

log = logging.getLogger(__name__)

#: async_rithmic's loggers: "rithmic" and one child per plant
_LOGGERS = (
    "rithmic",
    *(f"rithmic.plant.{p}" for p in ("ticker", "order", "pnl", "history", "repository")),
)
_PASSWORD = re.compile(r"""(['"]?password['"]?\s*[:=]\s*)(['"]?)[^'",}\s]*\2""", re.IGNORECASE)


class RithmicVenueSettings(BaseModel):
    """Where the Rithmic gateway is and which account trades (`RITHMIC_URL`, ...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    url: str = "wss://rituz00100.rithmic.com:443"
    user: str = ""
    password: SecretStr = SecretStr("")
    system: str = "Rithmic Test"
    app_name: str = "tradeloop"
    app_version: str = "0.1.0"
    account: str = ""  # empty: the only account of the login
    exchange: str = "CME"
    ca_file: str = ""
    commission_per_contract_usd: float = Field(default=0.0, ge=0)
    request_timeout_s: float = Field(default=10.0, gt=0)
    connect_timeout_s: float = Field(default=20.0, gt=0)
    reconnect_delays_s: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
    #: how often the plants' websockets are looked at for a dropped or silent connection
    watch_s: float = Field(default=0.05, gt=0)
    #: seconds without a frame after which an open plant is dead (0: 3 heartbeat intervals)
    silence_timeout_s: float = Field(default=0.0, ge=0)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RithmicVenueSettings:
        """Return the Rithmic settings of the process settings."""
        values: dict[str, Any] = {
            "url": settings.rithmic_url,
            "user": settings.rithmic_user,
            "password": settings.rithmic_password,
            "system": settings.rithmic_system,
            "app_name": settings.rithmic_app_name,
            "app_version": settings.rithmic_app_version,
            "account": settings.rithmic_account,
            "exchange": settings.rithmic_exchange,
            "ca_file": settings.rithmic_ca_file,
            "commission_per_contract_usd": settings.rithmic_commission_usd,
            "silence_timeout_s": settings.rithmic_silence_timeout_s,
        }
        return cls(**{**values, **overrides})


class _Redact(logging.Filter):
    """Mask passwords in a record's message and exception text."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def _clean(self, text: str) -> str:
        text = _PASSWORD.sub(r"\1\2***\2", text)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self._clean(record.getMessage()), None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, self._clean(text)
        elif record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        return True


_REDACT = _Redact()
#: logouts of sessions given up while they logged in (kept referenced until done)
_BACKGROUND: set[asyncio.Future[None]] = set()


def redact_rithmic_logs(password: SecretStr | None = None) -> None:
    """Mask the password (and any `password` field) in everything async_rithmic logs."""
    if password is not None and password.get_secret_value():
        _REDACT.secrets.add(password.get_secret_value())
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _REDACT not in logger.filters:
            logger.addFilter(_REDACT)


def new_client(config: RithmicVenueSettings) -> RithmicClient:
    """Return a `RithmicClient` for `config` whose plants do not reconnect on their own.

    The venue owns reconnection (a fresh `connect()` of both plants, then a catch-up),
    so the library's per-plant loop gives up at once (`ReconnectionSettings(max_retries=0)`).
    TLS: the client trusts the CA async_rithmic bundles (Rithmic's); `ca_file` adds one
    more to the client's `ssl_context`, for a gateway with a certificate of its own CA.
    """
    redact_rithmic_logs(config.password)
    client = RithmicClient(
        user=config.user,
        password=config.password.get_secret_value(),
        system_name=config.system,
        app_name=config.app_name,
        app_version=config.app_version,
        url=config.url,
        manual_or_auto=OrderPlacement.AUTO,
        reconnection_settings=ReconnectionSettings(
            max_retries=0, backoff_type="constant", interval=0
        ),
        retry_settings=RetrySettings(
            max_retries=1, timeout=config.request_timeout_s, jitter_range=None
        ),
    )
    if config.ca_file:
        client.ssl_context.load_verify_locations(cafile=config.ca_file)
    return client


def pick_account(accounts: list[Any], wanted: str) -> str:
    """Return the id of the account `wanted`, or of the only one."""
    ids = [str(a.account_id) for a in accounts]
    if wanted:
        if wanted in ids:
            return wanted
        raise ConnectionError(f"rithmic: no account {wanted!r}; the login has: {', '.join(ids)}")
    if len(ids) != 1:
        raise ConnectionError(f"rithmic: set RITHMIC_ACCOUNT to one of: {', '.join(ids) or 'none'}")
    return ids[0]


async def quiet_disconnect(client: RithmicClient, logout_s: float = 1.0) -> None:
    """Log out of every plant still connected, close what is left open; never raise, never hang.

    async_rithmic stops a plant by cancelling its receive loop, which waits for
    messages with `asyncio.wait_for`; on Python 3.11 that cancellation can be lost
    when a message arrives at the same moment, and the logout then waits for the loop
    as long as the websocket stays open (a cancellation of the logout is lost the
    same way). So the logout is never cancelled: after `logout_s` without it, each
    plant's websocket is closed (aborted if the close itself stalls), which ends
    the receive loop and lets the logout finish.
    """
    logout = asyncio.ensure_future(client.disconnect(timeout=logout_s))
    await asyncio.wait({logout}, timeout=2 * logout_s)
    if not logout.done():
        log.warning("rithmic: logout did not finish; closing the plants' websockets")
        for plant in client.plants.values():
            ws = plant.ws
            if ws is None:
                continue
            with contextlib.suppress(Exception):
                await asyncio.wait({asyncio.ensure_future(ws.close())}, timeout=1.0)
            if ws.state is not State.CLOSED:
                ws.transport.abort()
        await asyncio.wait({logout}, timeout=5.0)
    if logout.done() and not logout.cancelled() and logout.exception() is not None:
        log.warning("rithmic: logout failed: %s", logout.exception())


async def connect_plants(client: RithmicClient, plants: list[Any], timeout_s: float) -> None:
    """Log `client` in to `plants`; after `timeout_s` close its sockets (see `quiet_disconnect`).

    The login is not cancelled for the same reason a logout is not: a lost
    cancellation would leave it waiting on an open websocket.
    """
    login = asyncio.ensure_future(client.connect(plants=plants, plant_connect_delay=0))
    try:
        await asyncio.wait({login}, timeout=timeout_s)
    except asyncio.CancelledError:  # nobody wants this session any more: log out once in
        login.add_done_callback(lambda _: _logout_later(client))
        raise
    if not login.done():
        await quiet_disconnect(client)
        await asyncio.wait({login}, timeout=5.0)
        raise TimeoutError(f"no login within {timeout_s} s")
    login.result()


def _logout_later(client: RithmicClient) -> None:
    task = asyncio.ensure_future(quiet_disconnect(client))
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
