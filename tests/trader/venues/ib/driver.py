"""The IB venue under test: `IbVenue` (ib_async) over a real socket to the TWS API simulator."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from tests.trader.venues.conformance import VenueDriver
from trader.core.bar import MarketBar
from trader.core.instruments import BUILTIN
from trader.venues.ib import IbVenue, IbVenueSettings
from trader.venues.sims.ib import IbSimulator

T0 = 1_709_650_860  # 2024-03-05 15:01 UTC
INSTRUMENTS = {"ES": BUILTIN["ES"], "NQ": BUILTIN["NQ"]}


@dataclass(frozen=True)
class RegularHours:
    """Regular hours, far from the close."""

    in_rth: bool = True
    minutes_to_close: int = 300


class IbDriver(VenueDriver):
    """Trades bars at the simulator; a dropped session is the gateway going away."""

    def __init__(self, venue: IbVenue, sim: IbSimulator) -> None:
        super().__init__(venue)
        self.ib_venue = venue
        self.sim = sim
        self.ts_s = T0

    async def barrier(self) -> None:
        """Wait until the gateway has read everything the client sent (a `reqCurrentTime` round trip)."""
        if self.ib_venue.ib.isConnected() and self.sim.listening:
            await asyncio.wait_for(self.ib_venue.ib.reqCurrentTimeAsync(), self.timeout_s)

    async def bar(self, open: float, high: float, low: float, close: float) -> None:
        await self.barrier()
        self.ts_s += 60
        bar = MarketBar(self.symbol, self.ts_s, open, high, low, close, 10.0)
        self.venue.on_bar(bar, RegularHours())
        self.sim.on_bar(bar, RegularHours())

    async def drop_session(self) -> None:
        await self.sim.stop()  # the gateway is gone: connections closed, none accepted

    async def restore_session(self) -> None:
        await self.sim.start()  # the venue's own reconnect loop finds it again

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.venue.disconnect()
        await self.sim.stop()


async def start_ib(
    max_fill_per_bar: int | None = None,
    client_id: int = 11,
    sim: IbSimulator | None = None,
    **overrides: object,
) -> IbDriver:
    """Start a simulator (unless given) and an IB venue connected to it; trade one quiet bar."""
    if sim is None:
        sim = IbSimulator(INSTRUMENTS, slippage_ticks=1, commission_per_contract_usd=2.0)
        await sim.start()
    sim.partial_fills(max_fill_per_bar)
    venue = IbVenue(
        INSTRUMENTS,
        IbVenueSettings(
            port=sim.port,
            client_id=client_id,
            reconnect_delays_s=(0.05, 0.1, 0.2, 0.5),
            **overrides,  # type: ignore[arg-type]
        ),
    )
    await venue.connect()
    driver = IbDriver(venue, sim)
    p = driver.start_price
    await driver.bar(p, p, p, p)  # the market has traded: market brackets price from it
    return driver


async def ib_factory(max_fill_per_bar: int | None) -> VenueDriver:
    """The conformance suite's factory for `ib`."""
    return await start_ib(max_fill_per_bar)
