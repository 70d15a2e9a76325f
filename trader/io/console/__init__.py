"""The operator console: a live web page served by the trader's own API at `/ui`."""

from trader.io.console.feed import ConsoleFeed
from trader.io.console.routes import console_router

__all__ = ["ConsoleFeed", "console_router"]
