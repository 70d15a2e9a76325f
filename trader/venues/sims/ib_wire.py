"""The TWS API socket protocol as `ib_async` speaks it, server side, at `SERVER_VERSION`.

Framing: every message is a 4-byte big-endian length and NUL-terminated fields;
the client opens with `API\\0` and a framed version range (`v157..178`), the server
answers with its version and connection time. Each `encode_*` returns the fields
of one server message in the order `ib_async.decoder.Decoder` reads them at
`SERVER_VERSION`; `PlacedOrder.parse` reads the leading fields of `placeOrder`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "SERVER_VERSION",
    "IbContract",
    "PlacedOrder",
    "ProtocolError",
    "encode_commission_report",
    "encode_contract_details",
    "encode_error",
    "encode_exec_details",
    "encode_open_order",
    "encode_order_status",
    "encode_position",
    "frame",
    "split_frames",
]

#: inside ib_async's supported range (client.py MinClientVersion..MaxClientVersion)
SERVER_VERSION = 176

# incoming message ids (client -> server)
PLACE_ORDER, CANCEL_ORDER, REQ_OPEN_ORDERS, REQ_ACCOUNT_UPDATES = 3, 4, 5, 6
REQ_EXECUTIONS, REQ_IDS, REQ_CONTRACT_DETAILS, REQ_AUTO_OPEN_ORDERS = 7, 8, 9, 15
REQ_CURRENT_TIME, REQ_REAL_TIME_BARS, REQ_GLOBAL_CANCEL = 49, 50, 58
REQ_POSITIONS, START_API, REQ_ACCOUNT_UPDATES_MULTI, REQ_COMPLETED_ORDERS = 61, 71, 76, 99

Field = str | int | float | bool


class ProtocolError(ValueError):
    """Raise when bytes from a client do not follow the TWS API framing or message layout."""


@dataclass(frozen=True, slots=True)
class IbContract:
    """A CME future as the simulator lists it."""

    con_id: int
    symbol: str
    month: str  # YYYYMM
    last_trade_date: str  # YYYYMMDD
    local_symbol: str
    multiplier: str
    min_tick: float
    exchange: str = "CME"
    currency: str = "USD"

    def fields(self, *, with_exchange: bool = True, primary: bool = False) -> list[Field]:
        """Return the contract block most messages carry (conId .. tradingClass)."""
        out: list[Field] = [
            self.con_id,
            self.symbol,
            "FUT",
            self.last_trade_date,
            0.0,
            "",
            self.multiplier,
        ]
        if with_exchange:
            out.append(self.exchange)
        if primary:
            out.append("")
        out += [self.currency, self.local_symbol, self.symbol]
        return out


def _text(value: Field) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def frame(fields: list[Field]) -> bytes:
    """Return one framed message: length prefix and NUL-terminated fields."""
    body = "".join(_text(f) + "\0" for f in fields).encode()
    return struct.pack(">I", len(body)) + body


def split_frames(buffer: bytearray) -> list[list[str]]:
    """Remove and return every complete message in `buffer` as its list of fields."""
    out: list[list[str]] = []
    while len(buffer) >= 4:
        size = struct.unpack(">I", buffer[:4])[0]
        if size > 1 << 24:
            raise ProtocolError(f"message length {size} exceeds 16 MiB")
        if len(buffer) < 4 + size:
            break
        body = bytes(buffer[4 : 4 + size]).decode(errors="replace")
        del buffer[: 4 + size]
        fields = body.split("\0")
        if fields and fields[-1] == "":
            fields.pop()
        out.append(fields)
    return out


def handshake_answer(now: datetime) -> bytes:
    """Return the server's answer to the `API\\0` greeting: its version and the time."""
    return frame([SERVER_VERSION, now.astimezone(UTC).strftime("%Y%m%d %H:%M:%S UTC")])


def ib_time(ts: datetime) -> str:
    """Return an execution time as TWS writes it (UTC)."""
    return ts.astimezone(UTC).strftime("%Y%m%d-%H:%M:%S")


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """The leading fields of a `placeOrder` message (all the simulator acts on)."""

    order_id: int
    con_id: int
    symbol: str
    sec_type: str
    month: str
    exchange: str
    action: str
    quantity: float
    order_type: str
    limit_price: float | None
    aux_price: float | None
    tif: str
    oca_group: str
    account: str
    order_ref: str
    transmit: bool
    parent_id: int

    @classmethod
    def parse(cls, fields: list[str]) -> PlacedOrder:
        """Read a `placeOrder` message (`fields[0] == "3"`)."""
        if len(fields) < 24 or fields[0] != str(PLACE_ORDER):
            raise ProtocolError(f"not a placeOrder message: {fields[:3]}")
        try:
            return cls(
                order_id=int(fields[1]),
                con_id=int(fields[2] or 0),
                symbol=fields[3],
                sec_type=fields[4],
                month=fields[5],
                exchange=fields[9],
                action=fields[16],
                quantity=float(fields[17]),
                order_type=fields[18],
                limit_price=float(fields[19]) if fields[19] else None,
                aux_price=float(fields[20]) if fields[20] else None,
                tif=fields[21],
                oca_group=fields[22],
                account=fields[23],
                order_ref=fields[26],
                transmit=fields[27] == "1",
                parent_id=int(fields[28] or 0),
            )
        except (IndexError, ValueError) as exc:
            raise ProtocolError(f"malformed placeOrder: {exc}") from exc


def encode_error(req_id: int, code: int, text: str) -> list[Field]:
    """Return an `error` message (version 2; advancedOrderRejectJson since 166)."""
    return [4, 2, req_id, code, text, ""]


def encode_order_status(
    order_id: int,
    status: str,
    filled: float,
    remaining: float,
    avg_price: float,
    perm_id: int,
    parent_id: int,
    last_price: float,
    client_id: int,
) -> list[Field]:
    """Return an `orderStatus` message (no version field at this server version)."""
    return [
        3,
        order_id,
        status,
        filled,
        remaining,
        avg_price,
        perm_id,
        parent_id,
        last_price,
        client_id,
        "",
        0.0,
    ]


def encode_open_order(
    order: PlacedOrder,
    contract: IbContract,
    *,
    perm_id: int,
    client_id: int,
    status: str,
    quantity: float | None = None,
) -> list[Field]:
    """Return an `openOrder` message in `Decoder.openOrder`'s field order at `SERVER_VERSION`."""
    unset = ""
    out: list[Field] = [5, order.order_id, *contract.fields()]
    out += [
        order.action,
        order.quantity if quantity is None else quantity,
        order.order_type,
        "" if order.limit_price is None else order.limit_price,
        "" if order.aux_price is None else order.aux_price,
        order.tif,
        order.oca_group,
        order.account,
        "O",  # openClose
        0,  # origin: customer
        order.order_ref,
        client_id,
        perm_id,
        0,  # outsideRth
        0,  # hidden
        0.0,  # discretionaryAmt
        "",  # goodAfterTime
        "",  # deprecated sharesAllocation
        "",  # faGroup
        "",  # faMethod
        "",  # faPercentage
        "",  # faProfile (server version < 177)
        "",  # modelCode
        "",  # goodTillDate
        "",  # rule80A
        unset,  # percentOffset
        "",  # settlingFirm
        0,  # shortSaleSlot
        "",  # designatedLocation
        -1,  # exemptCode
        0,  # auctionStrategy
        unset,  # startingPrice
        unset,  # stockRefPrice
        unset,  # delta
        unset,  # stockRangeLower
        unset,  # stockRangeUpper
        unset,  # displaySize
        0,  # blockOrder
        0,  # sweepToFill
        0,  # allOrNone
        unset,  # minQty
        3 if order.oca_group else 0,  # ocaType: reduce with no overfill
        0,  # eTradeOnly
        0,  # firmQuoteOnly
        unset,  # nbboPriceCap
        order.parent_id,
        0,  # triggerMethod
        unset,  # volatility
        0,  # volatilityType
        "",  # deltaNeutralOrderType (none: no delta-neutral block)
        unset,  # deltaNeutralAuxPrice
        0,  # continuousUpdate
        0,  # referencePriceType
        unset,  # trailStopPrice
        unset,  # trailingPercent
        unset,  # basisPoints
        unset,  # basisPointsType
        "",  # comboLegsDescrip
        0,  # comboLegs
        0,  # orderComboLegs
        0,  # smartComboRoutingParams
        unset,  # scaleInitLevelSize
        unset,  # scaleSubsLevelSize
        unset,  # scalePriceIncrement (unset: no scale block)
        "",  # hedgeType (none: no hedgeParam)
        0,  # optOutSmartRouting
        "",  # clearingAccount
        "",  # clearingIntent
        0,  # notHeld
        0,  # deltaNeutralContract present
        "",  # algoStrategy (none: no params)
        0,  # solicited
        0,  # whatIf
        status,
    ]
    out += [""] * 9  # margin before / change / after (init, maint, equity with loan)
    out += [
        unset,  # commission
        unset,  # minCommission
        unset,  # maxCommission
        "",  # commissionCurrency
        "",  # warningText
        0,  # randomizeSize
        0,  # randomizePrice
        0,  # conditions
        "None",  # adjustedOrderType
        unset,  # triggerPrice
        unset,  # trailStopPrice
        unset,  # lmtPriceOffset
        unset,  # adjustedStopPrice
        unset,  # adjustedStopLimitPrice
        unset,  # adjustedTrailingAmount
        0,  # adjustableTrailingUnit
        "",  # softDollarTier name
        "",  # softDollarTier val
        "",  # softDollarTier displayName
        unset,  # cashQty
        0,  # dontUseAutoPriceForHedge
        0,  # isOmsContainer
        0,  # discretionaryUpToLimitPrice
        0,  # usePriceMgmtAlgo
        unset,  # duration (>= 159)
        unset,  # postToAts (>= 160)
        0,  # autoCancelParent (>= 162)
        unset,  # minTradeQty (>= 170)
        unset,  # minCompeteSize
        unset,  # competeAgainstBestOffset
        unset,  # midOffsetAtWhole
        unset,  # midOffsetAtHalf
    ]
    return out


def encode_exec_details(
    req_id: int,
    order_id: int,
    contract: IbContract,
    *,
    exec_id: str,
    ts: datetime,
    account: str,
    side: str,
    shares: float,
    price: float,
    perm_id: int,
    client_id: int,
    cum_qty: float,
    avg_price: float,
    order_ref: str,
) -> list[Field]:
    """Return an `execDetails` message (`side` is `BOT` or `SLD`)."""
    return [
        11,
        req_id,
        order_id,
        *contract.fields(),
        exec_id,
        ib_time(ts),
        account,
        contract.exchange,
        side,
        shares,
        price,
        perm_id,
        client_id,
        0,  # liquidation
        cum_qty,
        avg_price,
        order_ref,
        "",  # evRule
        "",  # evMultiplier
        "",  # modelCode
        0,  # lastLiquidity
    ]


def encode_commission_report(
    exec_id: str, commission_usd: float, realized_pnl: float
) -> list[Field]:
    """Return a `commissionReport` message for one execution."""
    return [59, 1, exec_id, commission_usd, "USD", realized_pnl, "", ""]


def encode_position(
    account: str, contract: IbContract, quantity: float, avg_cost: float
) -> list[Field]:
    """Return a `position` message (version 3); `avg_cost` is price x multiplier."""
    return [61, 3, account, *contract.fields(), quantity, avg_cost]


def encode_contract_details(req_id: int, c: IbContract) -> list[Field]:
    """Return a `contractDetails` message in the layout of server versions >= 164."""
    return [
        10,
        req_id,
        c.symbol,
        "FUT",
        c.last_trade_date,
        0.0,
        "",
        c.exchange,
        c.currency,
        c.local_symbol,
        c.symbol,  # marketName
        c.symbol,  # tradingClass
        c.con_id,
        c.min_tick,
        c.multiplier,
        "ACTIVETIM,LMT,MKT,STP,STPLMT",  # orderTypes
        c.exchange,  # validExchanges
        1,  # priceMagnifier
        0,  # underConId
        f"E-mini {c.symbol}",  # longName
        "",  # primaryExchange
        c.month,  # contractMonth
        "",  # industry
        "",  # category
        "",  # subcategory
        "US/Central",  # timeZoneId
        "",  # tradingHours
        "",  # liquidHours
        "",  # evRule
        "",  # evMultiplier
        0,  # secIdList
        0,  # aggGroup
        c.symbol,  # underSymbol
        "IND",  # underSecType
        "",  # marketRuleIds
        c.last_trade_date,  # realExpirationDate
        "",  # stockType
        1,  # minSize
        1,  # sizeIncrement
        1,  # suggestedSizeIncrement
    ]


def realtime_bars(
    start_s: int, open: float, high: float, low: float, close: float, volume: float
) -> list[list[Field]]:
    """Return one minute as twelve 5-second `realtimeBar` bodies (time .. count).

    The path is open -> high -> low -> close, so the twelve aggregate back to the
    minute exactly; the bar starting at second 55 is the minute's last.
    """
    legs = [(open, high, open, high), (high, high, low, low)]
    legs += [(low, low, low, low)] * 9
    legs += [(low, max(low, close), low, close)]
    share = int(volume) // 12
    out: list[list[Field]] = []
    for i, (o, h, lo, c) in enumerate(legs):
        v = share if i < 11 else int(volume) - 11 * share
        out.append([start_s + 5 * i, o, max(o, h, c), min(o, lo, c), c, v, c, 1])
    return out
