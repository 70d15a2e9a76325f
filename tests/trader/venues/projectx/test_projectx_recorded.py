"""The simulator's REST answers against the response shapes recorded in projectx-sdk's own tests.

The records below are the SDK's test fixtures (`tests/conftest.py` of
ChristianJStarr/projectx-sdk-python: `mock_account_response`,
`mock_contract_response`, `mock_order_response`, `mock_order_list_response`,
`mock_position_response`, `mock_trade_response`), one item each. The simulator's
answer to the same endpoint must carry every recorded field with a value of the
recorded JSON type (or null where the record has null), and must parse with the
SDK's own response models.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from projectx_sdk.models.account import Account
from projectx_sdk.models.contract import ContractSearchResponse
from projectx_sdk.models.order import OrderPlacementResponse, OrderSearchResponse
from projectx_sdk.models.position import PositionSearchResponse
from projectx_sdk.models.trade import TradeSearchResponse

from tests.trader.venues.projectx.driver import start_projectx
from trader.venues.base import BracketOrder

ENVELOPE = {"success": True, "errorCode": 0, "errorMessage": None}
RECORDED: dict[str, dict[str, Any]] = {
    "Account/search": {
        "accounts": [
            {
                "id": 1,
                "name": "TEST_ACCOUNT_1",
                "balance": 50000,
                "canTrade": True,
                "isVisible": True,
            }
        ],
        **ENVELOPE,
    },
    "Contract/search": {
        "contracts": [
            {
                "id": "CON.F.US.ENQ.H25",
                "name": "ENQH25",
                "description": "E-mini NASDAQ-100: March 2025",
                "tickSize": 0.25,
                "tickValue": 5,
                "activeContract": True,
            }
        ],
        **ENVELOPE,
    },
    "Order/place": {"orderId": 1234, **ENVELOPE},
    "Order/search": {
        "orders": [
            {
                "id": 1001,
                "accountId": 1,
                "contractId": "CON.F.US.ENQ.H25",
                "creationTimestamp": "2023-01-01T12:00:00+00:00",
                "updateTimestamp": "2023-01-01T12:01:00+00:00",
                "status": 1,
                "type": 2,
                "side": 0,
                "size": 1,
                "limitPrice": None,
                "stopPrice": None,
                "trailPrice": None,
                "customTag": "Test order 1",
                "linkedOrderId": None,
            }
        ],
        **ENVELOPE,
    },
    "Position/searchOpen": {
        "positions": [
            {
                "id": 101,
                "accountId": 1,
                "contractId": "CON.F.US.ENQ.H25",
                "creationTimestamp": "2023-01-01T12:00:00+00:00",
                "type": 1,
                "size": 2,
                "averagePrice": 15000.0,
            }
        ],
        **ENVELOPE,
    },
    "Trade/search": {
        "trades": [
            {
                "id": 2001,
                "accountId": 1,
                "contractId": "CON.F.US.ENQ.H25",
                "creationTimestamp": "2023-01-01T12:00:00+00:00",
                "price": 100.75,
                "profitAndLoss": 25.0,
                "fees": 1.5,
                "side": 0,
                "size": 1,
                "voided": False,
                "orderId": 1001,
            }
        ],
        **ENVELOPE,
    },
}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _same_shape(recorded: Any, got: Any, where: str) -> list[str]:
    """Return where `got` lacks a recorded field or has another JSON type there."""
    if recorded is None or (got is None and where.rsplit(".", 1)[-1] in _NULLABLE):
        return []
    if isinstance(recorded, dict):
        if not isinstance(got, dict):
            return [f"{where}: {got!r} is not an object"]
        out: list[str] = []
        for key, value in recorded.items():
            if key not in got:
                out.append(f"{where}.{key}: missing")
            else:
                out += _same_shape(value, got[key], f"{where}.{key}")
        return out
    if isinstance(recorded, list):
        if not isinstance(got, list) or not got:
            return [f"{where}: {got!r} is not a non-empty list"]
        return _same_shape(recorded[0], got[0], f"{where}[0]")
    return [] if _kind(recorded) == _kind(got) else [f"{where}: {got!r} is not like {recorded!r}"]


#: fields the Gateway leaves null when they do not apply (no tag, no P&L on an opening trade)
_NULLABLE = {"customTag", "profitAndLoss", "errorMessage"}


def test_the_simulators_answers_have_the_recorded_shapes_and_parse_with_the_sdk() -> None:
    async def go() -> None:
        d = await start_projectx()
        try:
            sim = d.sim
            p = d.start_price
            d.venue.submit_bracket(_entry())
            await d.bar(p, p + 1, p - 1, p)
            await d.px.drain()
            token = next(iter(sim._tokens))
            acct = sim.account["id"]
            since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
            bodies: dict[str, dict[str, Any]] = {
                "Account/search": {"onlyActiveAccounts": True},
                "Contract/search": {"searchText": "ES", "live": False},
                "Order/place": {
                    "accountId": acct,
                    "contractId": sim.contracts["ES"]["id"],
                    "type": 2,
                    "side": 1,
                    "size": 1,
                    "customTag": "shape-entry",
                    "stopLossBracket": {"ticks": 8, "type": 4},
                    "takeProfitBracket": {"ticks": 16, "type": 1},
                },
                "Order/search": {"accountId": acct, "startTimestamp": since},
                "Position/searchOpen": {"accountId": acct},
                "Trade/search": {"accountId": acct, "startTimestamp": since},
            }
            answers: dict[str, Any] = {}
            for path, body in bodies.items():
                r = await asyncio.to_thread(
                    requests.post,
                    f"{sim.url}/api/{path}",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=3,
                )
                assert r.status_code == 200, (path, r.text)
                answers[path] = r.json()
            problems = [
                problem
                for path, recorded in RECORDED.items()
                for problem in _same_shape(recorded, answers[path], path)
            ]
            assert not problems, problems
            Account.from_dict(answers["Account/search"]["accounts"][0])
            assert ContractSearchResponse.model_validate(answers["Contract/search"]).contracts
            assert OrderPlacementResponse.model_validate(answers["Order/place"]).order_id
            assert OrderSearchResponse.model_validate(answers["Order/search"]).orders
            assert PositionSearchResponse.model_validate(answers["Position/searchOpen"]).positions
            assert TradeSearchResponse.model_validate(answers["Trade/search"]).trades
        finally:
            await d.close()

    asyncio.run(go())


def _entry() -> BracketOrder:
    return BracketOrder("shape0-entry", "ES", "buy", 1, stop_distance=4.0, target_distance=8.0)
