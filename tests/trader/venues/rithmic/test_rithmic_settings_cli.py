"""`--venue rithmic` from the settings, secrets masked, and `tradeloop venues sim rithmic` printing what reaches it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from infra.cli import config
from infra.settings import Settings, get_settings
from tests.helpers import wait_until_async
from trader.venues import venue_for
from trader.venues.rithmic import RithmicVenue
from trader.venues.sims.cli import load_simulator


def test_venue_for_rithmic_reads_the_rithmic_settings_and_config_masks_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "RITHMIC_URL": "wss://rprotocol.example:443",
        "RITHMIC_USER": "trader7",
        "RITHMIC_PASSWORD": "hunter2-rithmic",
        "RITHMIC_SYSTEM": "Rithmic Paper Trading",
        "RITHMIC_ACCOUNT": "ACC-9",
        "RITHMIC_CA_FILE": "/etc/ssl/rithmic-ca.pem",
        "RITHMIC_COMMISSION_USD": "1.9",
    }
    settings = Settings(_env_file=None, **env)  # type: ignore[call-arg]
    venue = venue_for("rithmic", settings)
    assert isinstance(venue, RithmicVenue) and venue.name == "rithmic"
    c = venue.config
    assert (c.url, c.user, c.system, c.account, c.ca_file) == (
        "wss://rprotocol.example:443",
        "trader7",
        "Rithmic Paper Trading",
        "ACC-9",
        "/etc/ssl/rithmic-ca.pem",
    )
    assert isinstance(c.password, SecretStr) and c.password.get_secret_value() == "hunter2-rithmic"
    assert venue.commission_per_contract_usd == 1.9
    assert "hunter2" not in repr(c) and "hunter2" not in repr(venue.config.model_dump())
    assert not venue.connected and venue.state.value == "disconnected"
    masked = settings.masked()
    assert masked["rithmic_password"] == "********" and masked["rithmic_user"] == "trader7"
    get_settings.cache_clear()  # `config` reads the process-wide settings: read them again
    try:
        result = CliRunner().invoke(config, ["--json"], env=env)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output and "trader7" in result.output
    json.loads(result.output)


def test_venues_sim_rithmic_prints_settings_that_a_venue_connects_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADELOOP_HOME", str(tmp_path / "home"))
    runner = load_simulator("rithmic")
    settings = Settings(_env_file=None, SYMBOLS="ES")  # type: ignore[call-arg]

    async def go() -> None:
        printed: dict[str, str] = {}
        sim = asyncio.create_task(
            runner(
                settings,
                "127.0.0.1",
                0,
                printed.update,
                bar_ms=20,
                wait_for_client=False,
                restart_down_s=0.1,
            )
        )
        try:
            await wait_until_async(lambda: "RITHMIC_CA_FILE" in printed, 20, what="the settings")
            assert printed["VENUE"] == "rithmic"
            assert printed["RITHMIC_URL"].startswith("wss://127.0.0.1:")
            ca = Path(printed["RITHMIC_CA_FILE"])
            assert ca.parent == tmp_path / "home" / "rithmic-sim"
            assert (ca.parent / "server.key").stat().st_mode & 0o077 == 0  # the key is private
            with_them = Settings(_env_file=None, SYMBOLS="ES", **printed)  # type: ignore[call-arg]
            venue = venue_for("rithmic", with_them)
            await venue.connect()
            try:
                assert venue.connected and venue.positions() == []
                os.kill(os.getpid(), signal.SIGHUP)  # the simulator's gateway restarts
                await wait_until_async(
                    lambda: venue.connected and getattr(venue, "reconnects", 0) == 1,
                    10,
                    what="the session back after the restart",
                )
            finally:
                await venue.disconnect()
        finally:
            sim.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sim

    asyncio.run(go())
