"""The fault proxy itself: each mode against a real echo server, moto's S3 and Redis."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import redis
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError
from redis.backoff import NoBackoff
from redis.retry import Retry

from infra.faultproxy import FaultProxy, FaultProxyError, ProxyMode
from tests.helpers import TEST_BUCKET, unique, wait_until
from tests.kit.faults import ProxyKit


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _roundtrip(proxy: FaultProxy, payload: bytes, timeout_s: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout_s) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_pass_forwards_both_ways(fault_proxies: ProxyKit, echo: str) -> None:
    proxy = fault_proxies.to(echo)
    payload = bytes(range(256)) * 1000
    assert _roundtrip(proxy, payload) == payload
    wait_until(
        lambda: proxy.counters.bytes_up == len(payload) == proxy.counters.bytes_down,
        5,
        what="the proxy counted every byte",
    )


def test_refuse_closes_the_listener_and_resets_open_connections(
    fault_proxies: ProxyKit, echo: str
) -> None:
    proxy = fault_proxies.to(echo)
    held = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    held.sendall(b"x")
    assert held.recv(1) == b"x"
    proxy.set("refuse")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        held.sendall(b"y")
        if not held.recv(1):
            raise ConnectionResetError("closed")
    held.close()
    proxy.heal()  # the same port listens again
    assert _roundtrip(proxy, b"back") == b"back"


def test_blackhole_accepts_and_never_answers(fault_proxies: ProxyKit, echo: str) -> None:
    proxy = fault_proxies.to(echo)
    proxy.set("blackhole")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5) as sock:
        sock.sendall(b"anyone there?")
        with pytest.raises(TimeoutError):
            sock.recv(1)
    wait_until(lambda: proxy.counters.accepted == 1, 5, what="the connection was accepted")
    assert proxy.counters.bytes_up == 0
    proxy.heal()
    assert _roundtrip(proxy, b"healed") == b"healed"


def test_slow_adds_latency_and_caps_bandwidth(fault_proxies: ProxyKit, echo: str) -> None:
    proxy = fault_proxies.to(echo)
    proxy.set("slow", latency_ms=150)
    start = time.monotonic()
    assert _roundtrip(proxy, b"ping") == b"ping"
    assert time.monotonic() - start >= 0.3  # once each way
    proxy.set("slow", bandwidth_bytes_per_s=200_000)
    payload = b"z" * 100_000
    start = time.monotonic()
    assert _roundtrip(proxy, payload, timeout_s=10) == payload
    assert time.monotonic() - start >= 0.45  # 100 kB each way at 200 kB/s (pipelined)


def test_reset_cuts_the_response_after_n_bytes(fault_proxies: ProxyKit, echo: str) -> None:
    proxy = fault_proxies.to(echo)
    proxy.set("reset", reset_after_bytes=10)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as sock:
        sock.sendall(b"0123456789abcdefghij")
        got = b""
        with pytest.raises(ConnectionResetError):
            while chunk := sock.recv(65536):
                got += chunk
    assert got == b"0123456789"
    assert proxy.counters.resets == 1


def test_modes_are_validated() -> None:
    with pytest.raises(FaultProxyError, match="unknown fault proxy mode"):
        ProxyMode(name="flaky")  # type: ignore[arg-type]
    with pytest.raises(FaultProxyError, match="http_status"):
        ProxyMode(name="http_error", http_status=404)
    with pytest.raises(FaultProxyError, match="negative"):
        ProxyMode(name="slow", latency_ms=-1)


def _s3(endpoint: str, **config: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(**config),
    )


@pytest.mark.parametrize(("status", "code"), [(500, "InternalError"), (503, "SlowDown")])
def test_http_error_answers_s3_clients_with_s3_errors(
    fault_proxies: ProxyKit, s3_server: Any, status: int, code: str
) -> None:
    proxy = fault_proxies.to(s3_server.address, name="s3")
    client = _s3(proxy.url, retries={"total_max_attempts": 2, "mode": "standard"})
    key = unique("k")
    client.put_object(Bucket=TEST_BUCKET, Key=key, Body=b"before")
    proxy.set("http_error", http_status=status)
    with pytest.raises(ClientError) as err:
        client.put_object(Bucket=TEST_BUCKET, Key=key, Body=b"x" * 5000)
    assert err.value.response["Error"]["Code"] == code
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert proxy.counters.http_errors == 2  # botocore retried once, as configured
    proxy.heal()
    assert client.get_object(Bucket=TEST_BUCKET, Key=key)["Body"].read() == b"before"


def test_blackholed_s3_times_out_on_the_clients_read_timeout(
    fault_proxies: ProxyKit, s3_server: Any
) -> None:
    proxy = fault_proxies.to(s3_server.address, name="s3")
    client = _s3(
        proxy.url, read_timeout=0.5, connect_timeout=0.5, retries={"total_max_attempts": 1}
    )
    proxy.set("blackhole")
    with pytest.raises(ReadTimeoutError):
        client.head_bucket(Bucket=TEST_BUCKET)


def test_redis_through_the_proxy_down_then_back(fault_proxies: ProxyKit, redis_url: str) -> None:
    proxy = fault_proxies.to(redis_url.removeprefix("redis://").split("/")[0], name="redis")
    client = redis.Redis(
        host="127.0.0.1",
        port=proxy.port,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    key = unique("fp:")
    client.set(key, b"1", ex=60)
    proxy.set("blackhole")
    with pytest.raises(redis.exceptions.TimeoutError):
        client.get(key)
    proxy.set("refuse")
    with pytest.raises(redis.exceptions.ConnectionError):
        client.get(key)
    proxy.heal()
    assert client.get(key) == b"1"
