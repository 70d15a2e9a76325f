"""The liveness watchdog of a ProjectX SignalR hub connection: open, and nothing arriving.

signalrcore calls the hub's close callback when the websocket closes, but not when
it stays open while nothing arrives; its own keep-alive (`with_automatic_reconnect`)
only sends pings and runs only with its reconnection, which the venue does not use
(reconnection is the venue's, with a catch-up). A SignalR server pings every client
every 15 s by default (ASP.NET Core's `KeepAliveInterval`) and drops a client it has
not heard from for 30 s (`ClientTimeoutInterval`), so the watch:

- notes when the connection last received a record (it wraps the transport's
  `on_message` before the hub starts; signalrcore is unchanged),
- sends a ping (`type` 6) every `keepalive_s` (15 s), off the event loop,
- and calls the connection dead after `PROJECTX_SILENCE_TIMEOUT_S` (default 30 s,
  SignalR's own client default) without a record: logged, counted on
  `tradeloop_venue_silences_total{venue="projectx",plant=<hub>}`, and handed to
  `on_silent` (the venue closes the hub and reconnects).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from signalrcore.messages.ping_message import PingMessage

from trader import metrics

__all__ = ["HubWatch"]

log = logging.getLogger(__name__)


class HubWatch:
    """When a signalrcore hub connection last received a record; its pings; its silence."""

    def __init__(
        self, hub: Any, name: str, silence_timeout_s: float, keepalive_s: float = 15.0
    ) -> None:
        self.name = name
        self.silence_timeout_s = silence_timeout_s
        self.keepalive_s = keepalive_s
        self.last_s = time.monotonic()
        self._transport = hub.transport
        received = self._transport.on_message

        def stamped(*args: Any) -> Any:  # websocket-client passes (app, message) to functions
            self.last_s = time.monotonic()
            return received(args[-1])

        self._transport.on_message = stamped

    async def run(self, poll_s: float, on_silent: Callable[[], None]) -> None:
        """Ping every `keepalive_s`; after `silence_timeout_s` without a record call `on_silent`."""
        self.last_s = pinged = time.monotonic()
        while True:
            now = time.monotonic()
            silent_s = now - self.last_s
            if self.silence_timeout_s > 0 and silent_s > self.silence_timeout_s:
                log.warning(
                    "projectx: %s hub silent for %.1f s (bound %.1f s): websocket open, "
                    "no ping or update",
                    self.name,
                    silent_s,
                    self.silence_timeout_s,
                )
                metrics.VENUE_SILENCES.labels(venue="projectx", plant=self.name).inc()
                on_silent()
                return
            if now - pinged >= self.keepalive_s:
                pinged = now
                asyncio.get_running_loop().run_in_executor(None, self._ping)
            await asyncio.sleep(poll_s)  # the websocket's silence has no event

    def _ping(self) -> None:
        try:
            self._transport.send(PingMessage())
        except Exception as exc:  # a closed socket is the close callback's to report
            log.debug("projectx: %s hub ping not sent: %s", self.name, exc)
