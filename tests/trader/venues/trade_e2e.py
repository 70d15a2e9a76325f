"""What the venue end-to-end trading tests share: the `tradeloop` command and a topic reader."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from infra.bus import KafkaBus
from infra.contracts import OrderFilled, TradeOutcome, decode

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


def net_positions(fills: list[Any]) -> dict[str, int]:
    """Return each symbol's net filled quantity (buys minus sells)."""
    net: dict[str, int] = {}
    for f in fills:
        net[f.symbol] = net.get(f.symbol, 0) + (f.quantity if f.side == "buy" else -f.quantity)
    return net


def run_closed(run_id: str) -> Any:
    """Return a `read_events` predicate: the run has an outcome and every position is closed.

    The trader has exited when the reader starts, so its flattening fills are on the
    topic; stopping at the first outcome could stop before them.
    """

    def done(events: list[Any]) -> bool:
        ours = [e for e in events if getattr(e, "run_id", "") == run_id]
        fills = [e for e in ours if isinstance(e, OrderFilled)]
        outcome = any(isinstance(e, TradeOutcome) and not e.counterfactual for e in ours)
        return outcome and bool(fills) and set(net_positions(fills).values()) <= {0}

    return done
