"""Stream-processing peers of the streams worker, run on the same broker and records.

`quix` runs a Quix Streams application (librdkafka through confluent-kafka, RocksDB
state with changelog topics) that does, per record, what the worker's Faust agents
do: `streams.processing.process_record` (validate against the contract, fold into
`StreamFeatureState` with exactly-once positions), then produce the encoded
`FeatureUpdate`/`DriftAlert` outputs. The per-key state pieces live in Quix's
state store (pickled, like the worker's Faust table), keyed under the record's
Kafka key (the symbol), so the statistics per (symbol, strategy) are the worker's.

Quix installs process-wide signal handlers and `Application.run()` blocks, so the
peer runs in a process of its own:

    python -m bench.stream_peers quix --bootstrap HOST:PORT --prefix P --count N --out F

It stops itself after the N-th record is folded and writes a JSON report to F:
the clock runs from the first record folded to the N-th (the group join and the
final checkpoint are reported apart).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import threading
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

SOURCE = ("bars", "signals", "outcomes")
OUTPUT = "quix.features"

__all__ = ["OUTPUT", "SOURCE", "QuixPieces", "main", "run_quix"]


class QuixPieces(MutableMapping[str, Any]):
    """The state pieces of the current record's Kafka key, held in Quix's state store."""

    def __init__(self) -> None:
        self.state: Any = None  # set to the Quix `State` before each fold

    def __getitem__(self, key: str) -> Any:
        value = self.state.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        """Return a piece without the KeyError round trip."""
        return self.state.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        self.state.set(key, value)

    def __delitem__(self, key: str) -> None:
        self.state.delete(key)

    def __iter__(self) -> Iterator[str]:
        raise TypeError("Quix state is not iterable across keys")

    def __len__(self) -> int:
        raise TypeError("Quix state has no length across keys")


def _peak_rss_mb() -> float:
    """Return this program's peak RSS (VmHWM: getrusage's maxrss carries the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def run_quix(
    bootstrap: str,
    prefix: str,
    count: int,
    *,
    partitions: int = 4,
    session_timeout_ms: int = 10_000,
    timeout_s: float = 1800.0,
    state_dir: str | None = None,
    extra_consumer: dict[str, str] | None = None,
    changelog: bool = True,
    loglevel: str = "WARNING",
    buffer_per_partition: int = 10_000,
) -> dict[str, Any]:
    """Fold `count` records of the source topics with Quix Streams; return the timings."""
    import tempfile

    import confluent_kafka
    import psutil
    import quixstreams
    from quixstreams import Application, message_context
    from quixstreams.models.topics import TopicConfig
    from quixstreams.state.rocksdb import RocksDBOptions

    from features.stream import StreamFeatureState
    from infra.contracts import encode
    from streams.processing import process_record

    group = f"{prefix}quix-{time.time_ns()}"
    consumer_config = {"session.timeout.ms": str(session_timeout_ms), **(extra_consumer or {})}
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_interval=1.0,  # the worker commits every second too
        consumer_extra_config=consumer_config,
        state_dir=state_dir or tempfile.mkdtemp(prefix="bench-quix-"),
        rocksdb_options=RocksDBOptions(dumps=pickle.dumps, loads=pickle.loads),
        use_changelog_topics=changelog,
        loglevel=loglevel,  # type: ignore[arg-type]
        max_partition_buffer_size=buffer_per_partition,  # Quix's default: 10,000
    )
    out_topic = app.topic(
        f"{prefix}{OUTPUT}",
        key_serializer="bytes",
        value_serializer="bytes",
        config=TopicConfig(num_partitions=partitions, replication_factor=1),
    )
    pieces = QuixPieces()
    fold_state = StreamFeatureState(store=pieces)
    clock: dict[str, float] = {"started": time.perf_counter()}
    folded = [0, 0]  # records folded, outputs produced

    def stop_at_count() -> None:
        clock["last"], clock["cpu_last"] = time.perf_counter(), time.process_time()
        app.stop()

    def folder(short: str) -> Any:
        topic = f"{prefix}{short}"

        def fold(value: bytes, key: bytes, timestamp: int, headers: Any, state: Any) -> list[bytes]:
            if folded[0] == 0:
                clock["first"], clock["cpu_first"] = time.perf_counter(), time.process_time()
            ctx = message_context()
            pieces.state = state
            result = process_record(
                fold_state, short, topic, ctx.partition, ctx.offset, key, value,
                consumer=group, timestamp_ms=timestamp,
            )  # fmt: skip
            folded[0] += 1
            if folded[0] == count:
                stop_at_count()
            if result.dead_letter is not None:
                return [encode(result.dead_letter)]
            folded[1] += len(result.outputs)
            return [encode(o) for o in result.outputs]

        return fold

    for short in SOURCE:
        source = app.topic(f"{prefix}{short}", key_deserializer="bytes", value_deserializer="bytes")
        sdf = app.dataframe(source)
        sdf = sdf.apply(folder(short), stateful=True, expand=True, metadata=True)
        sdf.to_topic(out_topic)

    timed_out = threading.Event()

    def watchdog() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and "last" not in clock:
            time.sleep(0.5)
        if "last" not in clock:
            timed_out.set()
            app.stop()

    threading.Thread(target=watchdog, daemon=True).start()
    app.run()
    clock["stopped"] = time.perf_counter()
    report: dict[str, Any] = {
        "count": count,
        "folded": folded[0],
        "outputs": folded[1],
        "group": group,
        "output_topic": out_topic.name,
        "changelog_topics": changelog,
        "max_partition_buffer_size": buffer_per_partition,
        "consumer_config": consumer_config,
        "quixstreams": quixstreams.__version__,
        "confluent_kafka": confluent_kafka.version()[0]
        if isinstance(confluent_kafka.version(), tuple)
        else confluent_kafka.version(),
        "librdkafka": confluent_kafka.libversion()[0],
        "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),  # after the run
        "peak_rss_mb": _peak_rss_mb(),
    }
    if "first" in clock:
        report["join_s"] = clock["first"] - clock["started"]
    if timed_out.is_set() or "last" not in clock:
        report["error"] = f"folded {folded[0]:,} of {count:,} records within {timeout_s:.0f}s"
        return report
    report["fold_s"] = clock["last"] - clock["first"]
    report["final_checkpoint_s"] = clock["stopped"] - clock["last"]
    report["events_per_s"] = count / report["fold_s"]
    report["cpu_s"] = clock["cpu_last"] - clock["cpu_first"]  # all threads, librdkafka's too
    return report


def main(argv: list[str] | None = None) -> int:
    """Run one peer and write its JSON report; exit 1 if it did not finish."""
    ap = argparse.ArgumentParser(prog="python -m bench.stream_peers")
    ap.add_argument("peer", choices=["quix"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--prefix", required=True, help="topic prefix of the bench run")
    ap.add_argument("--count", type=int, required=True, help="records to fold")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--session-timeout-ms", type=int, default=10_000)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--state-dir", default=None)
    ap.add_argument("--no-changelog", action="store_true")
    ap.add_argument("--buffer-per-partition", type=int, default=10_000,
                    help="Quix max_partition_buffer_size (records buffered per partition)")  # fmt: skip
    ap.add_argument("--loglevel", default="WARNING", help="Quix log level (DEBUG shows librdkafka)")
    ap.add_argument("--consumer", action="append", default=[], metavar="KEY=VALUE",
                    help="extra librdkafka consumer setting (repeatable)")  # fmt: skip
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    try:
        report = run_quix(
            args.bootstrap,
            args.prefix,
            args.count,
            partitions=args.partitions,
            session_timeout_ms=args.session_timeout_ms,
            timeout_s=args.timeout,
            state_dir=args.state_dir,
            extra_consumer=dict(kv.split("=", 1) for kv in args.consumer),
            changelog=not args.no_changelog,
            loglevel=args.loglevel,
            buffer_per_partition=args.buffer_per_partition,
        )
    except Exception as exc:  # the parent reports it as "not measured"
        report = {"error": f"{type(exc).__name__}: {exc}"}
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if "error" not in report else 1


if __name__ == "__main__":
    sys.exit(main())
