"""`tradeloop venues sim rithmic`: the Rithmic gateway simulator trading the sim feed's bars."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.settings import Settings
from trader.core.instruments import instruments_from_settings
from trader.feeds.sim import SimFeed
from trader.venues.sims.rithmic import RithmicSimulator

__all__ = ["run"]


@dataclass(frozen=True)
class _AlwaysOpen:
    """The simulator does no session-end flattening: the trader's engine does."""

    in_rth: bool = True
    minutes_to_close: int = 1 << 20


async def run(
    settings: Settings,
    host: str,
    port: int,
    echo: Callable[[dict[str, str]], None],
    *,
    seed: int = 7,
    days: int | None = 1,
    bar_ms: int = 1000,
    wait_for_client: bool = True,
    session: str = "rth",
    restart_down_s: float = 1.0,
) -> None:
    """Serve the simulator on `host:port` until cancelled; `echo` the settings that reach it.

    The gateway's TLS certificate and its CA are written under
    `$TRADELOOP_HOME/rithmic-sim/` (`RITHMIC_CA_FILE` names the CA). The market
    (the sim feed's bars, one every `bar_ms` ms: each first fills working orders,
    then goes out on the ticker plant as trades) starts once a trader has logged in
    to the order plant and subscribed every symbol's trades (`--feed rithmic`),
    unless `wait_for_client` is off. SIGHUP restarts the gateway: every session drops
    and connections are refused for `restart_down_s` seconds; orders and positions stay.
    """
    symbols = tuple(settings.symbols)
    instruments = {s: i for s, i in instruments_from_settings(settings).items() if s in symbols}
    sim = RithmicSimulator(
        instruments,
        host=host,
        port=port,
        slippage_ticks=settings.slippage_ticks,
        commission_per_contract_usd=settings.commission_per_contract_usd,
        tls_dir=Path(settings.home) / "rithmic-sim",
    )
    await sim.start()
    values = {
        "venue": "rithmic",
        "rithmic_url": sim.url,
        "rithmic_user": sim.user,
        "rithmic_password": sim.password,
        "rithmic_system": sim.system,
        "rithmic_account": sim.account_id,
        "rithmic_ca_file": str(sim.ca_file),
    }
    echo({_env_name(name): value for name, value in values.items()})
    restarts: set[asyncio.Task[None]] = set()

    def restart() -> None:
        task = asyncio.ensure_future(sim.restart_gateway(restart_down_s))
        restarts.add(task)
        task.add_done_callback(restarts.discard)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, restart)
    try:
        deadline = time.monotonic() + 600
        while wait_for_client and not (
            sim.sessions("order") and all(sim.has_market_data(s) for s in sim.contracts)
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("no trader logged in and subscribed within 600 s")
            await asyncio.sleep(0.05)  # the market opens once a trader listens
        feed = SimFeed(
            symbols,
            seed=seed,
            days=days,
            session="globex" if session == "globex" else "rth",
            instruments=instruments,
        )
        for bar in feed:
            sim.on_bar(bar, _AlwaysOpen())
            sim.publish_bar(bar)
            await asyncio.sleep(bar_ms / 1000)  # the market's clock
        await asyncio.Event().wait()  # keep serving orders and positions after the last bar
    finally:
        await sim.stop()


def _env_name(field: str) -> str:
    """Return the environment variable of a settings field (its alias, spelled once there)."""
    alias = Settings.model_fields[field].validation_alias
    if not isinstance(alias, str):
        raise KeyError(f"setting {field!r} has no environment variable")
    return alias
