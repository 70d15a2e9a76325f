"""The venue conformance suite over `rithmic`: async_rithmic against the gateway simulator over TLS."""

from __future__ import annotations

import asyncio

import pytest

from infra.contracts import OrderFilled
from tests.trader.venues.conformance import CHECKS, run_check
from tests.trader.venues.rithmic.driver import rithmic_factory


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_rithmic_conforms(check: str) -> None:
    asyncio.run(run_check(rithmic_factory, check))


def test_rithmic_fills_carry_fill_ids_baskets_and_the_set_commission() -> None:
    rec = asyncio.run(run_check(rithmic_factory, "bracket_lifecycle_and_oco_target"))
    fills = [e for e in rec.events if isinstance(e, OrderFilled)]
    # the simulator fills by the paper model: next open plus one tick
    assert [(f.role, f.fill_price, f.commission_usd) for f in fills] == [
        ("entry", 5000.25, 4.5),
        ("target", 5008.25, 4.5),
    ]
    assert all(f.venue_fill_id.isdigit() and f.venue_order_id.isdigit() for f in fills)
    assert all(f.contract and f.venue == "rithmic" for f in fills)
