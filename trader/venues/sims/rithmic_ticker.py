"""The Rithmic simulator's ticker plant: front month contracts and `LastTrade` streams.

`RequestFrontMonthContract` (113) is answered with the contract the roll calendar
names (shaped as async_rithmic's recorded `front_month_contract_NQ` answer);
`RequestMarketDataUpdate` (100) subscribes a session to a contract's trades,
which `publish_bar` sends as `LastTrade` (150) messages.
"""

from __future__ import annotations

from typing import Any

from trader.core.bar import MarketBar
from trader.venues.sims.rithmic_wire import TICKER_PLANT, PlantSession, RithmicGateway, message

__all__ = ["RithmicTicker"]


class RithmicTicker:
    """Market data of the simulated gateway (a `RithmicSimulator` part)."""

    exchange: str
    gateway: RithmicGateway
    contracts: dict[str, str]
    _symbol_of: dict[str, str]

    def publish_bar(self, bar: MarketBar) -> None:
        """Stream a 1-minute bar as four `LastTrade`s at seconds 0, 20, 40 and 59 of its minute."""
        code = self.contracts.get(bar.symbol)
        if code is None:
            return
        start = bar.ts_s - 60
        size = max(1, round(bar.volume / 4))
        for second, price in ((0, bar.open), (20, bar.high), (40, bar.low), (59, bar.close)):
            self.publish_trade(bar.symbol, price, size, start + second)

    def publish_trade(self, symbol: str, price: float, size: int, ssboe: int) -> None:
        """Send one `LastTrade` of `symbol` to its subscribers (a fault switch for bad data too)."""
        code = self.contracts[symbol]
        trade = message(
            150,
            symbol=code,
            exchange=self.exchange,
            presence_bits=1,
            trade_price=price,
            trade_size=size,
            is_snapshot=False,
            ssboe=ssboe,
            usecs=0,
        )
        for s in self.gateway.logged_in(TICKER_PLANT):
            if code in s.market_data:
                s.send(trade)

    def has_market_data(self, symbol: str) -> bool:
        """Say whether some ticker session subscribed `symbol`'s trades."""
        code = self.contracts.get(symbol, "")
        return any(code in s.market_data for s in self.gateway.logged_in(TICKER_PLANT))

    def _front_month(self, s: PlantSession, rq: Any) -> None:
        code = self.contracts.get(rq.symbol)
        echo = list(rq.user_msg)
        if code is None or rq.exchange != self.exchange:
            s.send(message(114, user_msg=echo, rp_code=["7", "no data"]))
            return
        s.send(
            message(
                114,
                symbol_name=f"Front Month for {rq.symbol} - {code}.{self.exchange}",
                symbol=rq.symbol,
                exchange=self.exchange,
                user_msg=echo,
                rp_code=["0"],
                is_front_month_symbol=True,
                trading_symbol=code,
                trading_exchange=self.exchange,
            )
        )

    def _market_data(self, s: PlantSession, rq: Any) -> None:
        if rq.symbol not in self._symbol_of or rq.exchange != self.exchange:
            raise ValueError(f"unknown symbol {rq.symbol!r} on {rq.exchange!r}")
        if rq.request == 1:
            s.market_data.add(rq.symbol)
        else:
            s.market_data.discard(rq.symbol)
        s.send(message(101, user_msg=list(rq.user_msg), rp_code=["0"]))
