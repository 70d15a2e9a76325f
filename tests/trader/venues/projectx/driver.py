"""The ProjectX venue under test: `ProjectxVenue` (projectx-sdk, signalrcore) over loopback to the Gateway simulator."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from pydantic import SecretStr

from tests.trader.venues.conformance import VenueDriver
from trader.core.bar import MarketBar
from trader.core.instruments import BUILTIN
from trader.venues.projectx import ProjectxVenue, ProjectxVenueSettings
from trader.venues.sims.projectx import ProjectxSimulator

T0 = 1_709_650_860  # 2024-03-05 15:01 UTC
INSTRUMENTS = {"ES": BUILTIN["ES"], "NQ": BUILTIN["NQ"]}


@dataclass(frozen=True)
class RegularHours:
    """Regular hours, far from the close."""

    in_rth: bool = True
    minutes_to_close: int = 300


class ProjectxDriver(VenueDriver):
    """Trades bars at the simulator; a dropped session is the Gateway going away."""

    def __init__(self, venue: ProjectxVenue, sim: ProjectxSimulator) -> None:
        super().__init__(venue)
        self.px = venue
        self.sim = sim
        self.ts_s = T0

    async def bar(self, open: float, high: float, low: float, close: float) -> None:
        await self.px.drain()  # the Gateway has answered every request sent so far
        self.ts_s += 60
        bar = MarketBar(self.symbol, self.ts_s, open, high, low, close, 10.0)
        self.venue.on_bar(bar, RegularHours())
        self.sim.on_bar(bar, RegularHours())

    async def drop_session(self) -> None:
        await self.px.drain()
        await self.sim.stop()  # the Gateway is gone: hub closed, no REST answers

    async def restore_session(self) -> None:
        await self.sim.start()  # the venue's own reconnect loop finds it again

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.venue.disconnect()
        await self.sim.stop()


def settings_for(sim: ProjectxSimulator, **overrides: object) -> ProjectxVenueSettings:
    """Return venue settings that reach `sim`."""
    values: dict[str, object] = {
        "api_url": sim.url,
        "username": sim.username,
        "api_key": SecretStr(sim.api_key),
        "account": str(sim.account["name"]),
        "reconnect_delays_s": (0.05, 0.1, 0.2, 0.5),
        "request_timeout_s": 3.0,
        "connect_timeout_s": 5.0,
    }
    return ProjectxVenueSettings(**{**values, **overrides})  # type: ignore[arg-type]


async def start_projectx(
    max_fill_per_bar: int | None = None, sim: ProjectxSimulator | None = None, **overrides: object
) -> ProjectxDriver:
    """Start a simulator (unless given) and a ProjectX venue connected to it."""
    if sim is None:
        sim = ProjectxSimulator(INSTRUMENTS, slippage_ticks=1, commission_per_contract_usd=2.1)
        await sim.start()
    sim.partial_fills(max_fill_per_bar)
    venue = ProjectxVenue(INSTRUMENTS, settings_for(sim, **overrides))
    await venue.connect()
    return ProjectxDriver(venue, sim)


async def projectx_factory(max_fill_per_bar: int | None) -> VenueDriver:
    """The conformance suite's factory for `projectx`."""
    return await start_projectx(max_fill_per_bar)
