"""The venue conformance suite over `projectx`: projectx-sdk and signalrcore against the Gateway simulator."""

from __future__ import annotations

import asyncio

import pytest

from infra.contracts import OrderFilled
from tests.trader.venues.conformance import CHECKS, run_check
from tests.trader.venues.projectx.driver import projectx_factory


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_projectx_conforms(check: str) -> None:
    asyncio.run(run_check(projectx_factory, check))


def test_projectx_fills_carry_the_gateways_fees_and_trade_ids() -> None:
    rec = asyncio.run(run_check(projectx_factory, "bracket_lifecycle_and_oco_target"))
    fills = [e for e in rec.events if isinstance(e, OrderFilled)]
    # the simulator fills by the paper model: next open plus one tick; 2.10 per contract
    assert [(f.role, f.fill_price, f.commission_usd) for f in fills] == [
        ("entry", 5000.25, 4.2),
        ("target", 5008.25, 4.2),
    ]
    assert all(f.venue_fill_id.isdigit() and f.venue_order_id.isdigit() for f in fills)
    assert all(f.contract and f.venue == "projectx" for f in fills)
