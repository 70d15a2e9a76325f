"""A durable Tansu broker for restart tests: its records live in a bucket on moto's S3 server.

`durable_broker` (session scope, registered by `tests/conftest.py`) is one broker whose
`restart()` / `kill()` + `start()` come back on the same port and the same storage, so a
client reconnects to it and finds every record, committed offset and producer id it had.
`kill_after_saving_sequence` and `kill_after_allocating_offsets` leave the storage as a
kill between Tansu's writes of a produce leaves it; `write_burst` writes batches faster
than S3's one-second timestamps. `proxied_durable_broker` is one whose S3 requests pass a
fault proxy (slow S3: each fetch answers with the few batches it could read in time).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.faultproxy import FaultProxy
from infra.stack import BrokerStorage, ManagedProcess, free_port, start_tansu
from tests.helpers import unique

_META = "clusters/tansu_cluster/meta.json"


class DurableBroker:
    """A Tansu broker on a fixed port whose storage survives its restarts."""

    def __init__(self, storage: BrokerStorage, log_dir: Path) -> None:
        self.storage = storage
        self.port = free_port()
        self._log_dir = log_dir
        self._proc: ManagedProcess | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        """Return the bootstrap address (`127.0.0.1:PORT`), the same across restarts."""
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        """Say whether the broker process runs."""
        return self._proc is not None and self._proc.alive()

    def start(self) -> None:
        """Start the broker on its port and storage (no-op if it runs)."""
        if self.alive():
            return
        self.starts += 1
        self._proc = start_tansu(
            self.port, log_dir=self._log_dir / f"start-{self.starts}", storage=self.storage
        )

    def kill(self) -> None:
        """Kill the broker at once (SIGKILL): what it acknowledged is in the bucket."""
        if self._proc is not None:
            self._proc.kill()

    def stop(self) -> None:
        """Stop the broker gracefully."""
        if self._proc is not None:
            self._proc.stop()

    def restart(self, *, hard: bool = True) -> None:
        """Kill (or stop) the broker and start it again on the same port and storage."""
        self.kill() if hard else self.stop()
        self.start()

    def _s3(self) -> Any:
        env = self.storage.env()
        return boto3.client(
            "s3",
            endpoint_url=self.storage.endpoint,
            region_name=self.storage.region,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def kill_after_saving_sequence(self, topic: str) -> int:
        """Kill the broker as if between saving a producer's next sequence and the batch.

        Tansu saves the sequence first: the newest producer on `topic` has its sequence
        advanced by one record in storage, no batch is written, and the broker started
        again answers that producer's next batch as a duplicate. Return the producer id.
        """
        self.kill()
        s3 = self._s3()
        meta = json.loads(s3.get_object(Bucket=self.storage.bucket, Key=_META)["Body"].read())
        pid, detail = max(
            ((int(p), d) for p, d in meta["producers"].items()
             if any(topic in seqs for seqs in d["sequences"].values())),
            key=lambda item: item[0],
        )  # fmt: skip
        epoch = max(detail["sequences"], key=int)
        for partition in detail["sequences"][epoch][topic]:
            detail["sequences"][epoch][topic][partition] += 1
        s3.put_object(Bucket=self.storage.bucket, Key=_META, Body=json.dumps(meta).encode())
        self.start()
        return pid

    def kill_after_allocating_offsets(self, topic: str, partition: int, count: int) -> None:
        """Kill the broker as if between allocating a batch's `count` offsets and writing it.

        The partition's high watermark rises by `count` offsets that hold no records.
        """
        self.kill()
        s3 = self._s3()
        key = f"clusters/tansu_cluster/topics/{topic}/partitions/{partition:0>10}/watermark.json"
        mark = json.loads(s3.get_object(Bucket=self.storage.bucket, Key=key)["Body"].read())
        mark["high"] = int(mark.get("high") or 0) + count
        s3.put_object(Bucket=self.storage.bucket, Key=key, Body=json.dumps(mark).encode())
        self.start()

    async def write_burst(self, topic: str, values: list[bytes]) -> tuple[int, int]:
        """Write each value as a batch of its own to partition 0 of `topic`, one after another.

        Return (ListOffsets' end, the fetch's high watermark) of the partition afterwards.
        """
        producer = AIOKafkaProducer(bootstrap_servers=self.address, max_request_size=4 << 20)
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, value, partition=0)
        finally:
            await producer.stop()
        tp = TopicPartition(topic, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.address)
        await consumer.start()
        try:
            reported = int((await consumer.end_offsets([tp]))[tp])
            consumer.assign([tp])
            consumer.seek(tp, reported - 1)
            while consumer.highwater(tp) is None:
                await consumer.getmany(tp, timeout_ms=500, max_records=1)
            return reported, int(consumer.highwater(tp) or 0)
        finally:
            await consumer.stop()

    async def write_short_burst(
        self, topic: str, batch: Callable[[int], list[bytes]], short: int
    ) -> tuple[list[bytes], int, int]:
        """Write bursts (`batch(attempt)`) until ListOffsets answers `short` or more short.

        A burst counts when it fits in one second of S3's LastModified; try five times.
        Return every value written, ListOffsets' end and the true end.
        """
        values: list[bytes] = []
        reported = end = 0
        for attempt in range(5):
            burst = batch(attempt)
            values += burst
            reported, end = await self.write_burst(topic, burst)
            if reported <= end - short:
                return values, reported, end
        raise AssertionError(f"ListOffsets answered {reported} of {end}: no burst within a second")


@pytest.fixture
def proxied_durable_broker(
    s3_server: ManagedProcess, fault_proxies: Any, tmp_path: Path
) -> Iterator[tuple[DurableBroker, FaultProxy]]:
    """Start a durable broker whose S3 requests pass a fault proxy; return both."""
    proxy = fault_proxies.to(s3_server.address, name="s3")
    (tmp_path / "durable").mkdir()
    broker = DurableBroker(BrokerStorage(proxy.url, unique("tansu-")), tmp_path / "durable")
    broker.start()
    yield broker, proxy
    proxy.heal()
    broker.kill()


@pytest.fixture(scope="session")
def durable_broker(
    s3_server: ManagedProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DurableBroker]:
    """Start one durable broker (S3 storage on the session's moto server) for the session."""
    broker = DurableBroker(
        BrokerStorage(s3_server.address, unique("tansu-")), tmp_path_factory.mktemp("durable")
    )
    broker.start()
    yield broker
    broker.stop()
