"""The outbox: a durable spool, and exactly-once delivery across a broker restart."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from infra.bus import KafkaBus
from infra.contracts import Event, decode
from infra.offsets import read_topics_to_end
from infra.stack import free_port, start_tansu
from tests.helpers import SettingsFactory, wait_until
from trader.core.engine import Engine, EngineConfig
from trader.feeds.sim import SimFeed
from trader.io.drainer import OutboxDrainer
from trader.io.outbox import Outbox


def _fill(outbox: Outbox, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        outbox.append("signals", b"ES", f"v{i}".encode())


def test_spool_survives_reopen_and_commits_only_acked(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    _fill(ob, 5)
    ob.close()
    ob = Outbox(tmp_path)
    assert ob.next_seq == 5 and ob.depth == 5
    recs = ob.read(10)
    assert [r[0] for r in recs] == [0, 1, 2, 3, 4]
    assert recs[0][1:] == ("signals", b"ES", b"v0")
    ob.commit([1, 2])  # acked out of order: the cursor waits for 0
    assert ob.cursor == 0 and ob.depth == 3
    assert [r[0] for r in ob.read(10)] == [0, 3, 4]
    ob.close()
    ob = Outbox(tmp_path)
    assert [r[0] for r in ob.read(10)] == [0, 3, 4]
    ob.commit([0])
    assert ob.cursor == 3
    _fill(ob, 2, start=5)
    assert [r[3] for r in ob.read(10)] == [b"v3", b"v4", b"v5", b"v6"]


def test_torn_tail_is_cut_and_segments_roll_and_are_deleted(tmp_path: Path) -> None:
    ob = Outbox(tmp_path, segment_bytes=200)
    _fill(ob, 20)
    ob.close()
    segments = sorted(tmp_path.glob("seg-*.log"))
    assert len(segments) == 3
    with open(segments[-1], "ab") as fh:
        fh.write(b"\x40\x00\x00\x00garbage")  # a frame cut off mid-write
    ob = Outbox(tmp_path, segment_bytes=200)
    assert ob.next_seq == 20
    assert [r[3] for r in ob.read(100)] == [f"v{i}".encode() for i in range(20)]
    ob.commit(list(range(18)))
    assert len(list(tmp_path.glob("seg-*.log"))) < len(segments)
    assert [r[0] for r in ob.read(100)] == [18, 19]


def test_an_empty_segment_left_by_a_crash_is_reused_once(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    _fill(ob, 3)
    ob.close()
    (tmp_path / f"seg-{3:016d}.log").touch()  # rolled, then died before the first write
    ob = Outbox(tmp_path)
    _fill(ob, 2, start=3)
    assert [r[3] for r in ob.read(10)] == [f"v{i}".encode() for i in range(5)]


def test_reads_resume_in_order_through_partial_commits_and_rolls(tmp_path: Path) -> None:
    ob = Outbox(tmp_path, segment_bytes=300)
    _fill(ob, 60)
    delivered: list[int] = []
    batches = 0
    while ob.depth:
        batch = ob.read(7)
        batches += 1
        assert batch and batch[0][0] == ob.cursor
        keep = batch if batches % 3 else batch[: len(batch) // 2]  # a failed send acks a prefix
        delivered.extend(r[0] for r in keep)
        ob.commit([r[0] for r in keep])
        if batches == 5:
            _fill(ob, 10, start=60)  # appends while draining
    assert delivered == list(range(70))
    assert [r[3] for r in ob.read(5)] == []


async def _consume_ids(bus: KafkaBus, short: set[str], timeout_s: float = 30.0) -> list[str]:
    """Return the event id of every record on the topics (short names), in full.

    Reads each partition up to its true end (`infra.offsets`), so a duplicate on the broker is always
    among the ids (call it once the writer is done).
    """
    ids: list[str] = []

    def take(msgs: list[Any]) -> None:
        events: list[Event] = [decode(m.value or b"") for m in msgs]
        ids.extend(e.event_id for e in events)

    topics = sorted(bus.topic(name) for name in short)
    await asyncio.wait_for(read_topics_to_end(bus, topics, take), timeout_s)
    return ids


@pytest.mark.kafka
@pytest.mark.slow
def test_broker_restart_loses_nothing_and_sends_nothing_twice(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    port = free_port()
    first = start_tansu(port, log_dir=tmp_path / "tansu")
    settings = make_settings(
        kafka=False, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}", KAFKA_REQUEST_TIMEOUT_MS=3000
    )
    bus = KafkaBus(settings)
    outbox = Outbox(tmp_path / "outbox")
    drainer = OutboxDrainer(outbox, bus, retry_s=0.3, send_timeout_s=5.0).start()
    emitted: list[str] = []
    topics: set[str] = set()  # every topic the engine wrote to

    def record(topic: str, event: Event) -> None:
        topics.add(topic)
        emitted.append(event.event_id)

    engine = Engine(
        settings,
        EngineConfig(run_id="restart", source="sim", record_metrics=False),
        sinks=[outbox.sink, record],
    )
    bars = iter(SimFeed(("ES", "NQ"), seed=4))
    second = None
    try:
        engine.run(itertools.islice(bars, 4 * 23 * 60 * 2))
        assert len(emitted) > 50
        assert drainer.wait_drained(60), drainer.status()
        # Tansu keeps nothing on disk: read everything acked before it goes away
        before = asyncio.run(_consume_ids(bus, topics))
        assert sorted(before) == sorted(emitted)
        first.stop()
        n_before = len(emitted)
        engine.run(itertools.islice(bars, 3 * 23 * 60 * 2))  # trading goes on, the spool grows
        assert len(emitted) > n_before
        wait_until(lambda: drainer.link == "down", 30, what="the drainer to see the link down")
        assert outbox.depth == len(emitted) - n_before
        second = start_tansu(port, log_dir=tmp_path / "tansu2")
        assert drainer.wait_drained(90), drainer.status()
        after = asyncio.run(_consume_ids(bus, topics))
    finally:
        drainer.stop(5)
        outbox.close()
        first.stop()
        if second is not None:
            second.stop()
    assert sorted(after) == sorted(emitted[n_before:])  # only what the spool held
    everything = before + after
    assert len(everything) == len(set(everything)) == len(emitted)
    assert set(everything) == set(emitted)
    assert drainer.failures >= 1 and drainer.sent == len(emitted)
