"""The venue conformance suite over the paper venue (ib, projectx and rithmic run it in their own folders)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from infra.contracts import OrderFilled, decode, encode
from tests.trader.venues.conformance import (
    CHECKS,
    VenueDriver,
    VenueFactory,
    run_check,
    run_conformance,
)
from trader.core.bar import MarketBar
from trader.core.instruments import BUILTIN
from trader.venues.paper import PaperVenue, PaperVenueSettings

T0 = 1_709_650_860  # 2024-03-05 15:01 UTC


@dataclass(frozen=True)
class _Session:
    """Regular hours, far from the close: no session-end exits during the checks."""

    in_rth: bool = True
    minutes_to_close: int = 300


class PaperDriver(VenueDriver):
    """Feeds the paper venue bars; a dropped session is its own disconnect."""

    def __init__(self, venue: PaperVenue) -> None:
        super().__init__(venue)
        self.paper = venue
        self.ts_s = T0

    async def bar(self, open: float, high: float, low: float, close: float) -> None:
        self.ts_s += 60
        self.paper.on_bar(
            MarketBar(self.symbol, self.ts_s, open, high, low, close, 10.0), _Session()
        )

    async def drop_session(self) -> None:
        await self.paper.disconnect()


async def paper_factory(max_fill_per_bar: int | None) -> VenueDriver:
    config = PaperVenueSettings(
        slippage_ticks=1, commission_per_contract_usd=2.0, max_fill_per_bar=max_fill_per_bar
    )
    venue = PaperVenue({"ES": BUILTIN["ES"], "NQ": BUILTIN["NQ"]}, config)
    await venue.connect()
    return PaperDriver(venue)


FACTORIES: dict[str, VenueFactory] = {"paper": paper_factory}


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("venue", sorted(FACTORIES))
def test_venue_conforms(venue: str, check: str) -> None:
    asyncio.run(run_check(FACTORIES[venue], check))


def test_the_whole_suite_runs_and_paper_fills_by_its_bar_model() -> None:
    recorded = asyncio.run(run_conformance(paper_factory))
    assert set(recorded) == set(CHECKS)
    # the paper venue's own numbers: market entry at the next open plus one tick,
    # commission per contract per fill, the target filled at its price
    life = recorded["bracket_lifecycle_and_oco_target"]
    fills = [e for e in life.events if isinstance(e, OrderFilled)]
    assert [(f.role, f.fill_price, f.commission_usd) for f in fills] == [
        ("entry", 5000.25, 4.0),
        ("target", 5008.25, 4.0),
    ]
    # the paper venue builds its events unvalidated (`Event.checked`): each one validates
    for rec in recorded.values():
        for event in rec.events:
            assert type(event).model_validate(event.model_dump(by_alias=True)) == event
            assert decode(encode(event)) == event


def test_a_check_fails_on_a_venue_that_breaks_oco() -> None:
    """The suite has teeth: a paper venue whose target's fill leaves the stop working fails."""

    class NoOco(PaperVenue):
        def _done(self, o, reason, expired=False):  # type: ignore[no-untyped-def]
            if reason == "oco":
                return  # the sibling keeps working
            super()._done(o, reason, expired)

    async def broken(max_fill_per_bar: int | None) -> VenueDriver:
        driver = PaperDriver(NoOco({"ES": BUILTIN["ES"]}, PaperVenueSettings()))
        driver.timeout_s = 0.5
        return driver

    with pytest.raises(AssertionError, match="stop's OCO"):
        asyncio.run(run_check(broken, "bracket_lifecycle_and_oco_target"))
