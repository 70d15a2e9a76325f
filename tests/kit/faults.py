"""Fault proxies for tests: one per dependency, closed when the test ends.

`ProxyKit.to(address)` puts a `infra.faultproxy.FaultProxy` in front of any
`host:port` (Redis, moto's S3, an echo server); `ProxyKit.broker(log_dir)` starts a
Tansu broker that advertises the proxy's address, so every Kafka connection of a
client (bootstrap and the broker it is sent on to) goes through the proxy.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from infra.faultproxy import FaultProxy
from infra.stack import ManagedProcess, StackError, _managed, _spawn, tansu_binary, wait_port

__all__ = ["ProxiedBroker", "ProxyKit"]


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
