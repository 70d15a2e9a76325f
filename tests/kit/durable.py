"""A durable Tansu broker for restart tests: its records live in a bucket on moto's S3 server.

`durable_broker` (session scope, registered by `tests/conftest.py`) is one broker whose
`restart()` / `kill()` + `start()` come back on the same port and the same storage, so a
client reconnects to it and finds every record, committed offset and producer id it had.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.stack import BrokerStorage, ManagedProcess, free_port, start_tansu
from tests.helpers import unique


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
