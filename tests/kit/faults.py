"""Fault proxies for tests: one per dependency, closed when the test ends.

`ProxyKit.to(address)` puts a `infra.faultproxy.FaultProxy` in front of any
`host:port` (Redis, moto's S3, an echo server); `ProxyKit.broker(log_dir)` starts a
Tansu broker that advertises the proxy's address, so every Kafka connection of a
client (bootstrap and the broker it is sent on to) goes through the proxy.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord

from infra.bus import KafkaBus
from infra.contracts import SignalSnapshot
from infra.faultproxy import FaultProxy
from infra.offsets import read_topics_to_end
from infra.stack import ManagedProcess, StackError, _managed, _spawn, tansu_binary, wait_port

__all__ = ["ProxiedBroker", "ProxyKit", "decision_lateness_s", "decision_stall_s", "read_topics"]


class ProxiedBroker:
    """A memory Tansu broker reachable only through a fault proxy."""

    def __init__(self, process: ManagedProcess, proxy: FaultProxy) -> None:
        self.process = process
        self.proxy = proxy

    @property
    def bootstrap(self) -> str:
        """Return the address clients connect to (the proxy's)."""
        return self.proxy.address


class ProxyKit:
    """Make proxies (and a proxied broker) and close them all at the end."""

    def __init__(self) -> None:
        self.proxies: list[FaultProxy] = []
        self.processes: list[ManagedProcess] = []

    def to(self, address: str, name: str = "proxy") -> FaultProxy:
        """Return a started proxy in front of `host:port` (or a URL)."""
        proxy = FaultProxy.to_address(address, name=name)
        self.proxies.append(proxy)
        return proxy

    def broker(self, log_dir: Path) -> ProxiedBroker:
        """Start a Tansu broker that advertises a proxy in front of it."""
        from infra.stack import free_port

        proxy = FaultProxy("127.0.0.1", 0, name="kafka").start()
        self.proxies.append(proxy)
        port = free_port()
        proxy.upstream = ("127.0.0.1", port)
        listen, advertised = f"tcp://127.0.0.1:{port}", f"tcp://{proxy.address}"
        argv = [tansu_binary(), "broker", "--listener-url", listen]
        argv += ["--advertised-listener-url", advertised]
        log = log_dir / f"tansu-{port}.log"
        proc = _spawn("kafka", argv, log, env={"RUST_LOG": "warn"})
        try:
            wait_port("127.0.0.1", port, 10, proc)
        except StackError:
            proc.kill()
            raise
        managed = _managed("kafka", proc, argv, f"127.0.0.1:{port}", log)
        self.processes.append(managed)
        return ProxiedBroker(managed, proxy)

    def close(self) -> None:
        """Close every proxy and stop every process started here."""
        for proxy in self.proxies:
            with contextlib.suppress(Exception):
                proxy.close()
        for proc in self.processes:
            with contextlib.suppress(Exception):
                proc.stop()


def decision_lateness_s(signals: Sequence[SignalSnapshot], speed: float) -> list[float]:
    """Return how late each decision came against the feed's pace, in seconds.

    The sim feed releases a bar at `t0 + (bar time - first bar time) / speed`; a
    decision's `ts_init` minus that moment (relative to the first decision) is its
    lateness. A loop that stalls for a second makes the next decisions a second late.
    """
    if not signals:
        return []
    ordered = sorted(signals, key=lambda s: s.ts_init)
    init0, bar0 = ordered[0].ts_init, ordered[0].ts_event
    return [
        (s.ts_init - init0).total_seconds() - (s.ts_event - bar0).total_seconds() / speed
        for s in ordered
    ]


def decision_stall_s(signals: Sequence[SignalSnapshot], speed: float) -> float:
    """Return the largest jump in lateness between two consecutive decisions, in seconds.

    A feed that runs faster than the engine makes every decision a little later than
    the one before; a decision loop that waits on a dependency makes one jump.
    """
    late = decision_lateness_s(signals, speed)
    return max((b - a for a, b in itertools.pairwise(late)), default=0.0)


async def read_topics(bootstrap: str, topics: Sequence[str]) -> list[ConsumerRecord[Any, Any]]:
    """Read whole topics to their true end (assigned partitions, no group), in offset order."""
    out: list[ConsumerRecord[Any, Any]] = []
    await read_topics_to_end(KafkaBus(bootstrap=bootstrap), topics, out.extend)
    return out
