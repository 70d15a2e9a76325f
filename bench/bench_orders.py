"""Order round trip on the paper venue: submit -> `OrderFilled` read back from the bus.

`run(quick)` starts its own Tansu broker. Each round trip submits a bracket to the
paper venue, shows it the next bar (the paper venue fills market entries at the
next bar's open), and waits until a consumer of the `orders` topic has read the
entry's `OrderFilled`: the venue's events go through the trader's durable outbox
(`trader.io.outbox`, spooled on disk, drained by its own thread to Kafka), as in
`tradeloop trade`. Then the position is flattened (its events drain too) before the
next round trip. Baseline: the same submit -> fill inside the process (the event at
the venue's listener, no outbox, no bus). 300 round trips (quick: 30).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

T0 = 1_709_650_860  # 2024-03-05 15:01 UTC, regular hours


class _Session:
    in_rth = True
    minutes_to_close = 300


def _round_trips(n: int, bootstrap: str | None, home: Path) -> list[float]:
    """Return n submit -> fill latencies in seconds (through the bus when `bootstrap` is set)."""
    from infra.bus import KafkaBus, topic_settings
    from infra.contracts import OrderFilled, VenueEvent, decode
    from infra.settings import Settings
    from trader.core.bar import MarketBar
    from trader.core.instruments import BUILTIN
    from trader.io.drainer import OutboxDrainer
    from trader.io.outbox import Outbox
    from trader.venues.base import BracketOrder
    from trader.venues.paper import PaperVenue

    venue = PaperVenue({"ES": BUILTIN["ES"]})
    filled_at: dict[str, float] = {}
    latencies: list[float] = []

    if bootstrap is None:

        def local(event: VenueEvent) -> None:
            if isinstance(event, OrderFilled) and event.role == "entry":
                filled_at[event.client_order_id] = time.perf_counter()

        venue.add_listener(local)
        for i in range(n):
            cid = f"rt{i}-entry"
            t0 = time.perf_counter()
            _trip(venue, cid, i, BracketOrder, MarketBar)
            latencies.append(filled_at[cid] - t0)
            venue.flatten("ES", "requested")
        return latencies

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        TOPIC_PREFIX=f"bench{int(time.time())}.",
        OUTBOX_DIR=str(home / "outbox"),
    )
    bus = KafkaBus(settings)
    outbox = Outbox(home / "outbox")
    drainer = OutboxDrainer(outbox, bus).start()

    def spool(event: VenueEvent) -> None:
        outbox.append_event("orders", event)
        drainer.notify()

    venue.add_listener(spool)

    async def main() -> None:
        await bus.ensure_topics(topic_settings(bus, ["orders"]))
        # a short fetch wait: Tansu answers an empty fetch only when the wait ends
        consumer = bus.consumer(
            [bus.topic("orders")], None, from_beginning=True, fetch_max_wait_ms=5
        )
        await consumer.start()
        try:
            for i in range(n):
                cid = f"rt{i}-entry"
                t0 = time.perf_counter()
                _trip(venue, cid, i, BracketOrder, MarketBar)
                deadline = t0 + 30.0
                while cid not in filled_at:
                    if time.perf_counter() > deadline:
                        raise TimeoutError(f"no OrderFilled for {cid} on the bus within 30 s")
                    for record in await consumer.poll(timeout_ms=100):
                        event: VenueEvent = decode(record.value or b"", VenueEvent)
                        if isinstance(event, OrderFilled) and event.role == "entry":
                            filled_at.setdefault(event.client_order_id, time.perf_counter())
                latencies.append(filled_at[cid] - t0)
                venue.flatten("ES", "requested")
        finally:
            await consumer.stop()

    try:
        asyncio.run(main())
    finally:
        drainer.stop(10.0)
        outbox.close()
    return latencies


def _trip(venue: Any, cid: str, i: int, bracket: Any, market_bar: Any) -> None:
    venue.submit_bracket(
        bracket(
            client_order_id=cid,
            symbol="ES",
            side="buy",
            quantity=1,
            stop_distance=40.0,
            target_distance=80.0,
        )
    )
    p = 5000.0
    venue.on_bar(market_bar("ES", T0 + 60 * i, p, p + 1, p - 1, p, 10.0), _Session())


def run(quick: bool = False) -> dict[str, Any]:
    """Time n order round trips through the outbox and Tansu; report p50/p99."""
    from bench.harness import summarize
    from infra.stack import start_tansu

    n = 30 if quick else 300
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        local = _round_trips(n, None, home)
        broker = start_tansu(log_dir=home)
        try:
            bus = _round_trips(n, broker.address, home)
        finally:
            broker.stop()
    return {
        "workload": (
            f"{n} bracket orders on the paper venue: submit, next bar, entry OrderFilled read "
            "back from the orders topic (outbox on disk -> drain thread -> Tansu -> consumer)"
        ),
        "metrics": {
            "round_trip_us": summarize(
                bus,
                "us",
                scale=1e6,
                baseline="in_process",
                label="submit -> OrderFilled on the bus",
            )
        },
        "baseline": {
            "in_process": summarize(
                local, "us", scale=1e6, label="submit -> OrderFilled at the venue's listener"
            )
        },
        "targets": {"round_trip_us": {"stat": "p99", "op": "<", "value": 50_000, "unit": "us"}},
        "notes": (
            "the paper venue fills at the next bar, shown at once after the submission; the "
            "round trip is the trader's own path to the bus (spool append, drain thread wake-up, "
            "produce with linger 0, a consumer's fetch with fetch_max_wait_ms=5: Tansu answers an "
            "empty fetch only when its wait ends, 500 ms by default), not a broker's"
        ),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, default=str))
