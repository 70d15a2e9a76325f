"""Trades aggregated into 1-minute bars, per symbol (the live feeds of trade streams share it)."""

from __future__ import annotations

from trader.core.bar import MarketBar

__all__ = ["MinuteTrades"]

_LAST_SECOND = 59


class MinuteTrades:
    """Aggregate trades into 1-minute bars per symbol (`ts_s` = the minute's close)."""

    def __init__(self) -> None:
        self._open: dict[str, list[float]] = {}  # symbol -> [start, o, h, l, c, v]

    def start_of(self, symbol: str) -> int | None:
        """Return the start of the minute being built for `symbol`."""
        cur = self._open.get(symbol)
        return int(cur[0]) if cur is not None else None

    def push(self, symbol: str, t_s: int, price: float, volume: float) -> list[MarketBar]:
        """Add one trade at `t_s`; return the minutes it completed."""
        done: list[MarketBar] = []
        start = t_s - t_s % 60
        cur = self._open.get(symbol)
        if cur is not None and cur[0] != start:
            done.append(self._finish(symbol))
            cur = None
        if cur is None:
            self._open[symbol] = [start, price, price, price, price, volume]
        else:
            cur[2], cur[3], cur[4], cur[5] = (
                max(cur[2], price),
                min(cur[3], price),
                price,
                cur[5] + volume,
            )
        if t_s % 60 >= _LAST_SECOND:
            done.append(self._finish(symbol))
        return done

    def _finish(self, symbol: str) -> MarketBar:
        start, o, h, lo, c, v = self._open.pop(symbol)
        return MarketBar(symbol, int(start) + 60, o, h, lo, c, v)
