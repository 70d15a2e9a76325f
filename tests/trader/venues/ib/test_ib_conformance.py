"""The venue conformance suite over `ib`: ib_async against the TWS API simulator on loopback."""

from __future__ import annotations

import asyncio

import pytest

from infra.contracts import OrderFilled
from tests.trader.venues.conformance import CHECKS, run_check
from tests.trader.venues.ib.driver import ib_factory


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_ib_conforms(check: str) -> None:
    asyncio.run(run_check(ib_factory, check))


def test_ib_fills_carry_the_gateways_commission_and_execution_ids() -> None:
    rec = asyncio.run(run_check(ib_factory, "bracket_lifecycle_and_oco_target"))
    fills = [e for e in rec.events if isinstance(e, OrderFilled)]
    # the simulator fills by the paper model: next open plus one tick; 2.00 per contract
    assert [(f.role, f.fill_price, f.commission_usd) for f in fills] == [
        ("entry", 5000.25, 4.0),
        ("target", 5008.25, 4.0),
    ]
    assert all(f.venue_fill_id.startswith("0000e0d5.") for f in fills)
    assert all(f.contract and f.venue == "ib" for f in fills)
