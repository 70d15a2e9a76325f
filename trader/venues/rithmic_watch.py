"""The liveness watchdog of a Rithmic session's plants: closed, or open and silent.

async_rithmic notices a websocket that closes, not one that stays open while
nothing arrives (a gateway that hangs, a reader that stopped). A live plant
answers every `RequestHeartbeat`, with or without orders or trades: the watch
sends one on each plant that has received nothing for a heartbeat interval (the
one the gateway names at login), so a plant that receives nothing for a few
intervals is dead. (async_rithmic's own heartbeat loop first sleeps 29 s, the
interval it assumes before login, so it cannot be relied on for shorter ones.)

The watch notes when each plant last received a frame: async_rithmic reads
every frame of a plant through the plant's `_recv`, which the watch wraps on the
plants of our own client, and it sends heartbeats with the plant's
`_send_heartbeat` (the library itself is unchanged).

The bound is `RITHMIC_SILENCE_TIMEOUT_S`; 0 (the default) means 3 heartbeat
intervals. A bound below 2 heartbeat intervals is raised to 2.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from async_rithmic import RithmicClient

from trader import metrics

__all__ = ["SILENCE_HEARTBEATS", "Lost", "PlantWatch", "Silence"]

log = logging.getLogger(__name__)

#: heartbeat intervals of silence after which a plant is dead (RITHMIC_SILENCE_TIMEOUT_S=0)
SILENCE_HEARTBEATS = 3.0
#: the shortest bound, in heartbeat intervals (an idle plant hears one answer per interval)
_MIN_HEARTBEATS = 2.0


@dataclass(frozen=True)
class Silence:
    """A plant that received nothing for `silent_s` seconds (more than `bound_s`)."""

    plant: str
    silent_s: float
    bound_s: float

    def __str__(self) -> str:
        return (
            f"{self.plant} plant silent for {self.silent_s:.1f} s "
            f"(bound {self.bound_s:.1f} s): websocket open, no heartbeat answer or update"
        )


@dataclass(frozen=True)
class Lost:
    """Why a session is lost: plants whose websocket closed, plants silent past their bound."""

    closed: tuple[str, ...]
    silent: tuple[Silence, ...]

    def __str__(self) -> str:
        closed = [f"{p} plant websocket closed" for p in self.closed]
        return "; ".join([*closed, *(str(s) for s in self.silent)])


class PlantWatch:
    """When each watched plant of `client` last received a frame; which are closed or silent.

    `lost` is meant to be called every `watch_s`: it also sends the heartbeats.
    """

    def __init__(
        self, client: RithmicClient, plants: tuple[str, ...], silence_timeout_s: float = 0.0
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._plants = {name: client.plants[name] for name in plants}
        self.silence_timeout_s = silence_timeout_s
        now = self._loop.time()
        #: plant -> loop time of its last frame (the watch's start before the first)
        self.last_frame_s = dict.fromkeys(plants, now)
        self._probe_s = dict.fromkeys(plants, now)  # plant -> when the watch last sent a heartbeat
        self._probes: dict[str, asyncio.Future[Any]] = {}
        for name, plant in self._plants.items():
            plant._recv = self._timed(name, plant._recv)

    def _timed(self, name: str, recv: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        async def timed() -> Any:
            frame = await recv()
            self.last_frame_s[name] = self._loop.time()
            return frame

        return timed

    def bound_s(self, plant: str) -> float:
        """Return the seconds of silence after which `plant` is dead."""
        beat_s = float(self._plants[plant].heartbeat_interval)
        if self.silence_timeout_s <= 0:
            return SILENCE_HEARTBEATS * beat_s
        return max(self.silence_timeout_s, _MIN_HEARTBEATS * beat_s)

    def probe(self) -> None:
        """Send a heartbeat on each plant quiet for a heartbeat interval (one at a time)."""
        now = self._loop.time()
        for name, plant in self._plants.items():
            beat_s = float(plant.heartbeat_interval)
            quiet_s = now - max(self.last_frame_s[name], self._probe_s[name])
            pending = self._probes.get(name)
            if quiet_s >= beat_s and (pending is None or pending.done()) and plant.is_connected:
                self._probe_s[name] = now
                sent = asyncio.ensure_future(plant._send_heartbeat())
                sent.add_done_callback(_quiet)
                self._probes[name] = sent

    def cancel(self) -> None:
        """Stop heartbeats still being sent."""
        for sent in self._probes.values():
            sent.cancel()

    def __enter__(self) -> PlantWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def closed(self) -> list[str]:
        """Return the plants whose websocket is closed."""
        return [name for name, plant in self._plants.items() if not plant.is_connected]

    def silent(self) -> list[Silence]:
        """Return the plants that received nothing for longer than their bound."""
        now = self._loop.time()
        found = []
        for name in self._plants:
            silent_s, bound_s = now - self.last_frame_s[name], self.bound_s(name)
            if silent_s > bound_s:
                found.append(Silence(name, silent_s, bound_s))
        return found

    def lost(self, venue: str) -> Lost | None:
        """Say why the session is lost (a plant closed or silent), or None while it lives.

        A silent plant counts on `tradeloop_venue_silences_total{venue, plant}`.
        """
        closed, silent = self.closed(), self.silent()
        if not closed and not silent:
            self.probe()
            return None
        self.cancel()
        for s in silent:
            metrics.VENUE_SILENCES.labels(venue=venue, plant=s.plant).inc()
        return Lost(tuple(closed), tuple(silent))


def _quiet(sent: asyncio.Future[Any]) -> None:
    """Let a heartbeat fail quietly: a dead plant is the silence check's to report."""
    if not sent.cancelled() and sent.exception() is not None:
        log.debug("rithmic: heartbeat not sent: %s", sent.exception())
