"""Market data feeds behind one interface: `sim`, `csv:PATH`, `parquet:PATH`, `dbn:PATH`, `kafka`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from trader.core.bar import MarketBar
from trader.feeds.base import Feed, FeedDataError, FeedStats, Pacer

__all__ = ["FILE_KINDS", "Feed", "FeedDataError", "FeedStats", "MarketBar", "Pacer", "open_feed"]

#: Feed kinds that name a file (`csv:PATH`); a bare path is read by its extension.
FILE_KINDS = ("csv", "parquet", "dbn")


def open_feed(
    spec: str,
    *,
    symbols: tuple[str, ...],
    seed: int = 7,
    days: int | None = None,
    symbol: str | None = None,
    skip_bad: bool = False,
    tz: str = "UTC",
    bar_ts: Literal["close", "open"] = "close",
    bus: Any = None,
    from_beginning: bool = False,
    on_dead_letter: Any = None,
    instruments: dict[str, Any] | None = None,
) -> Feed:
    """Return the feed named by `spec`: `sim`, `csv:PATH`, `parquet:PATH`, `dbn:PATH`, `kafka`, `ib`, `projectx`, `rithmic` or a path.

    A file's bars are checked against the instruments (built-in ones unless given) and
    the strategies' bar length before any trade (`trader.feeds.sanity`).
    """
    kind, _, rest = spec.partition(":")
    if kind == "sim":
        from trader.feeds.sim import SimFeed

        return SimFeed(symbols, seed=seed, days=days, instruments=instruments)
    if kind == "ib":
        from infra.settings import Settings
        from trader.feeds.ib import IbFeed

        return IbFeed.from_settings(Settings(), symbols)
    if kind == "projectx":
        from infra.settings import Settings
        from trader.feeds.projectx import ProjectxFeed

        return ProjectxFeed.from_settings(Settings(), symbols)
    if kind == "rithmic":
        from infra.settings import Settings
        from trader.feeds.rithmic import RithmicFeed

        return RithmicFeed.from_settings(Settings(), symbols)
    if kind == "kafka":
        from trader.feeds.kafka import KafkaFeed

        if bus is None:
            raise ValueError("the kafka feed needs a bus")
        return KafkaFeed(
            bus, symbols=symbols, from_beginning=from_beginning, on_dead_letter=on_dead_letter
        )
    path = rest if kind in FILE_KINDS else spec
    if not path:
        raise ValueError(f"feed {spec!r}: give a path, e.g. csv:bars.csv")
    from trader.core.instruments import BUILTIN
    from trader.feeds.files import FileFeed
    from trader.feeds.sanity import check_fit

    feed = FileFeed(
        Path(path),
        symbol=symbol,
        symbols=symbols,
        tz=tz,
        bar_ts=bar_ts,
        skip_bad=skip_bad,
        fmt=kind if kind in FILE_KINDS else None,
    )
    feed.warnings = check_fit(feed.frame, instruments or BUILTIN, feed.name)
    return feed
