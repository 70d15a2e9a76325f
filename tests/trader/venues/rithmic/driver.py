"""The Rithmic venue under test: `RithmicVenue` (async_rithmic) over TLS on loopback to the gateway simulator."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from tests.trader.venues.conformance import VenueDriver
from trader.core.bar import MarketBar
from trader.core.instruments import BUILTIN
from trader.venues.rithmic import RithmicVenue, RithmicVenueSettings
from trader.venues.sims.rithmic import RithmicSimulator

T0 = 1_709_650_860  # 2024-03-05 15:01 UTC
INSTRUMENTS = {"ES": BUILTIN["ES"], "NQ": BUILTIN["NQ"]}


@dataclass(frozen=True)
class RegularHours:
    """Regular hours, far from the close."""

    in_rth: bool = True
    minutes_to_close: int = 300


class RithmicDriver(VenueDriver):
    """Trades bars at the simulator; a dropped session is the gateway going away."""

    def __init__(self, venue: RithmicVenue, sim: RithmicSimulator) -> None:
        super().__init__(venue)
        self.rt = venue
        self.sim = sim
        self.ts_s = T0

    async def bar(self, open: float, high: float, low: float, close: float) -> None:
        await self.rt.drain()  # the gateway has answered every request sent so far
        self.ts_s += 60
        bar = MarketBar(self.symbol, self.ts_s, open, high, low, close, 10.0)
        self.venue.on_bar(bar, RegularHours())
        self.sim.on_bar(bar, RegularHours())

    async def barrier(self) -> None:
        """Wait until the gateway has every request and we have read every notification sent so far.

        A show-orders request is answered after every notification queued before it, on
        the same order plant socket, and async_rithmic handles messages in order.
        """
        await self.rt.drain()
        client = self.rt.client
        assert client is not None
        await client.list_orders(account_id=self.rt.account_id)

    async def drop_session(self) -> None:
        await self.rt.drain()
        await self.sim.stop()  # the gateway is gone: every plant's websocket closed

    async def restore_session(self) -> None:
        await self.sim.start()  # the venue's own reconnect loop finds it again

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.venue.disconnect()
        await self.sim.stop()
        self.sim.close()


def settings_for(sim: RithmicSimulator, **overrides: object) -> RithmicVenueSettings:
    """Return venue settings that reach `sim`."""
    values: dict[str, object] = {
        "url": sim.url,
        "user": sim.user,
        "password": SecretStr(sim.password),
        "system": sim.system,
        "account": sim.account_id,
        "ca_file": str(sim.ca_file),
        "commission_per_contract_usd": 2.25,
        "reconnect_delays_s": (0.05, 0.1, 0.2, 0.5),
        "request_timeout_s": 3.0,
        "connect_timeout_s": 5.0,
        "watch_s": 0.02,
    }
    return RithmicVenueSettings(**{**values, **overrides})  # type: ignore[arg-type]


async def start_rithmic(
    max_fill_per_bar: int | None = None,
    sim: RithmicSimulator | None = None,
    tls_dir: Path | None = None,
    **overrides: object,
) -> RithmicDriver:
    """Start a simulator (unless given) and a Rithmic venue connected to it."""
    if sim is None:
        sim = RithmicSimulator(
            INSTRUMENTS, slippage_ticks=1, commission_per_contract_usd=2.25, tls_dir=tls_dir
        )
        await sim.start()
    sim.partial_fills(max_fill_per_bar)
    venue = RithmicVenue(INSTRUMENTS, settings_for(sim, **overrides))
    await venue.connect()
    return RithmicDriver(venue, sim)


async def rithmic_factory(max_fill_per_bar: int | None) -> VenueDriver:
    """The conformance suite's factory for `rithmic`."""
    return await start_rithmic(max_fill_per_bar)
