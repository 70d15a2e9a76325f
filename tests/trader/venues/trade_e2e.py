"""What the venue end-to-end trading tests share: the `tradeloop` command and a topic reader."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from infra.bus import KafkaBus
from infra.contracts import decode

TRADELOOP = [str(Path(sys.executable).with_name("tradeloop"))]


async def read_events(
    bus: KafkaBus, topics: list[str], until: Any, timeout_s: float = 60.0
) -> list[Any]:
    """Read `topics` from the beginning until `until(events)` holds or `timeout_s` passes."""
    consumer = bus.consumer([bus.topic(t) for t in topics], None, from_beginning=True)
    await consumer.start()
    out: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not until(out) and loop.time() < deadline:
            out.extend(decode(r.value or b"") for r in await consumer.poll(timeout_ms=500))
    finally:
        await consumer.stop()
    return out
