"""The liveness watchdog of an IB API connection: the socket open, nothing arriving.

TWS and IB Gateway send nothing on an idle API connection (the protocol has no
heartbeat), and ib_async notices a closed socket, not a hung gateway. The watch
reads when ib_async last received data (`IB.wrapper.time`, set on every TCP
read); after a third of `IB_SILENCE_TIMEOUT_S` without any it asks the gateway's
clock (`reqCurrentTime`), which TWS answers at once with or without market
activity. Nothing received for the whole bound: the connection is dead. The
watch logs it, counts it on `tradeloop_venue_silences_total{venue="ib",plant="api"}`
and returns; the venue then closes the connection, which runs its reconnect
and catch-up.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ib_async import IB

from trader import metrics

__all__ = ["watch_ib"]

log = logging.getLogger(__name__)


async def watch_ib(ib: IB, silence_timeout_s: float, poll_s: float, where: str) -> float:
    """Return the seconds of silence once nothing arrived for `silence_timeout_s` (0: never).

    The probe is sent without a future of its own (`IB.client.reqCurrentTime`): its
    answer only has to arrive, and it cannot take the place of someone else's
    `reqCurrentTimeAsync`.
    """
    started = probed = time.time()
    while ib.isConnected():
        now = time.time()
        heard = max(ib.wrapper.time, started)
        if silence_timeout_s > 0 and now - heard > silence_timeout_s:
            log.warning(
                "ib: connection to %s silent for %.1f s (bound %.1f s): socket open, "
                "no answer to reqCurrentTime",
                where,
                now - heard,
                silence_timeout_s,
            )
            metrics.VENUE_SILENCES.labels(venue="ib", plant="api").inc()
            return now - heard
        if silence_timeout_s > 0 and now - max(heard, probed) > silence_timeout_s / 3:
            probed = now
            ib.client.reqCurrentTime()
        await asyncio.sleep(poll_s)  # the socket's silence has no event
    return 0.0
