"""The lake sink's exactly-once landing, deterministically: a sink that dies after its
upload and before its commit is followed by one with other batch sizes, which must cut
the same batch (from the marker), overwrite the same keys and add no duplicate."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from infra.bus import BusConsumer
from infra.contracts import Bar
from infra.lake import list_files, parse_key
from infra.objectstore import store_for_uri
from infra.settings import Settings
from streams.sink import LakeSink, marker_key
from tests.helpers import unique
from tests.kit.harness import lake_event_ids, produce
from tests.kit.synth import synthetic_events


class Crash(BaseException):
    """The process dies here (nothing after it runs, nothing is committed)."""


class CrashBeforeCommit(LakeSink):
    """A sink whose first commit never happens: it dies right after the upload."""

    def _make_consumer(self) -> BusConsumer:
        consumer = super()._make_consumer()

        async def commit(*args: Any, **kwargs: Any) -> None:
            raise Crash

        consumer.commit = commit  # type: ignore[method-assign]
        return consumer


async def run_until(sink: LakeSink, done: Callable[[], bool], timeout_s: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while not done() and not task.done():
            if loop.time() > deadline:
                raise TimeoutError("sink did not finish")
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        with contextlib.suppress(Crash):
            await asyncio.wait_for(task, 30)


def test_a_sink_dying_between_upload_and_commit_lands_nothing_twice(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(s3=True, TOPIC_PARTITIONS=2)
    bars = [e for e in synthetic_events(2400) if isinstance(e, Bar)]
    produce(settings, bars[:500])
    group = unique("lake")
    store = store_for_uri(settings.lake, settings)

    first = CrashBeforeCommit(
        settings, group_id=group, topics=["bars"], batch_events=300, batch_seconds=0.2
    )
    asyncio.run(run_until(first, lambda: False, 60))  # ends with the crash
    crashed_keys = {f["key"] for f in list_files(store, "bars")}
    assert crashed_keys, "the first sink uploaded before dying"
    assert any(store.exists(marker_key("bars", p)) for p in (0, 1))
    assert first.events_written == 0  # nothing was committed
    produce(settings, bars[500:])

    second = LakeSink(settings, group_id=group, topics=["bars"], batch_events=7, batch_seconds=0.05)
    want = {b.event_id for b in bars}
    asyncio.run(run_until(second, lambda: second.events_written >= len(bars), 90))
    assert second.resumed_batches >= 1  # it read the marker and re-cut the same batch

    counts = lake_event_ids(settings, ["bars"])
    assert set(counts) == want and max(counts.values()) == 1
    final = list_files(store, "bars")
    assert crashed_keys <= {f["key"] for f in final}  # overwritten, not duplicated
    ranges: dict[tuple[int, str, str], list[tuple[int, int]]] = defaultdict(list)
    for f in final:
        info = parse_key(f["key"])
        assert info is not None
        ranges[(info["partition"], info["date"], info["symbol"])].append(
            (info["first"], info["last"])
        )
    for spans in ranges.values():
        spans.sort()
        assert all(a[1] < b[0] for a, b in itertools.pairwise(spans)), spans


def test_replay_reads_a_kafka_time_range_through_the_agents_function(
    make_settings: Callable[..., Settings],
) -> None:
    import datetime as dt

    from streams.replay import kafka_records, replay_into_features
    from tests.kit.harness import recompute

    settings = make_settings(TOPIC_PARTITIONS=2)
    events = list(synthetic_events(600))
    before = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    produce(settings, events)
    records = kafka_records(settings, ["bars", "signals", "outcomes"], before, None)
    assert len(records) == len(events)
    result = replay_into_features(settings, records, push=False)
    assert result.events == len(events) and result.dead_letters == 0
    want = recompute(events)
    for symbol in ("ES", "NQ"):
        assert result.state.strategy_values(symbol) == want.strategy_values(symbol)
        assert result.state.symbol_values(symbol) == want.symbol_values(symbol)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    assert kafka_records(settings, ["bars"], later, None) == []
