"""A loopback TCP fault proxy: put it between a process and Kafka, S3 or Redis.

One `FaultProxy` listens on a loopback port and forwards every connection to one
upstream `host:port`. Its mode is switched at run time from any thread:

- `pass`: forward both ways unchanged;
- `refuse`: the listener is closed (a connect gets ECONNREFUSED) and every open
  connection is reset;
- `blackhole`: connections are accepted and bytes are read, but nothing is
  forwarded or answered; connections held this way are reset when the mode
  changes (the peer's timeouts decide what it makes of the silence);
- `slow`: every chunk waits `latency_ms` and flows at most `bandwidth_bytes_per_s`;
- `reset`: requests are forwarded, then each response is cut after
  `reset_after_bytes` bytes with a TCP reset;
- `http_error`: HTTP requests are read whole and answered by the proxy itself with
  `http_status` (500 `InternalError` or 503 `SlowDown`, the S3 error body), never
  forwarded.

The proxy runs its own event loop in a daemon thread, so a synchronous test, a
subprocess under test and the soak all drive it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = ["MODES", "FaultProxy", "FaultProxyError", "ProxyMode"]

log = logging.getLogger(__name__)

Mode = Literal["pass", "refuse", "blackhole", "slow", "reset", "http_error"]
MODES: tuple[str, ...] = ("pass", "refuse", "blackhole", "slow", "reset", "http_error")

_S3_ERRORS = {
    500: ("Internal Server Error", "InternalError", "We encountered an internal error."),
    503: ("Slow Down", "SlowDown", "Please reduce your request rate."),
}
_CHUNK_BYTES = 65536
_MAX_HEADER_BYTES = 64 * 1024


class FaultProxyError(ValueError):
    """Raise when a mode or its parameters are not valid."""


@dataclass(frozen=True)
class ProxyMode:
    """What the proxy does now, with the parameters of the mode."""

    name: Mode = "pass"
    latency_ms: float = 0.0
    bandwidth_bytes_per_s: float = 0.0
    reset_after_bytes: int = 0
    http_status: int = 503

    def __post_init__(self) -> None:
        if self.name not in MODES:
            raise FaultProxyError(f"unknown fault proxy mode {self.name!r}; use one of {MODES}")
        if self.latency_ms < 0 or self.bandwidth_bytes_per_s < 0 or self.reset_after_bytes < 0:
            raise FaultProxyError(f"fault proxy parameters must not be negative: {self}")
        if self.name == "http_error" and self.http_status not in _S3_ERRORS:
            raise FaultProxyError(
                f"http_status must be one of {sorted(_S3_ERRORS)}, got {self.http_status}"
            )


@dataclass
class ProxyCounters:
    """What the proxy saw since it started."""

    accepted: int = 0
    refused_resets: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    http_errors: int = 0
    resets: int = 0
    by_mode: dict[str, int] = field(default_factory=dict)


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[Any]] = []

    def abort(self) -> None:
        for w in (self.writer, self.upstream):
            if w is not None:
                _reset(w)
        for t in self.tasks:
            t.cancel()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a TCP reset (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()


class FaultProxy:
    """Forward loopback connections to `upstream`, with a fault mode switchable at run time."""

    def __init__(
        self, upstream_host: str, upstream_port: int, *, port: int = 0, name: str = "proxy"
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.name = name
        self.port = port
        self.mode = ProxyMode()
        self.counters = ProxyCounters()
        self._conns: set[_Conn] = set()
        self._server: asyncio.AbstractServer | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"faultproxy-{name}")
        self._thread.daemon = True
        self._started = False

    # lifecycle (any thread) ----------------------------------------------

    @classmethod
    def to_address(cls, address: str, *, name: str = "proxy") -> FaultProxy:
        """Return a started proxy in front of `host:port` or `scheme://host:port`."""
        hostport = address.split("://", 1)[-1].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        return cls(host or "127.0.0.1", int(port), name=name).start()

    def start(self) -> FaultProxy:
        """Start the loop thread and listen (on a free port unless one was given)."""
        if not self._started:
            self._thread.start()
            self._started = True
            self._call(self._listen())
        return self

    def close(self) -> None:
        """Stop listening, reset every connection and end the loop thread."""
        if not self._started:
            return
        self._call(self._shutdown(final=True))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._started = False

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> str:
        """Return `127.0.0.1:port` of the listener."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Return `http://127.0.0.1:port` (for an S3 endpoint)."""
        return f"http://{self.address}"

    # switching (any thread) ----------------------------------------------

    def set(self, name: Mode, **params: Any) -> ProxyMode:
        """Switch to a mode (`set("slow", latency_ms=200)`); return the new mode."""
        mode = replace(ProxyMode(), name=name, **params)
        self._call(self._switch(mode))
        return mode

    def heal(self) -> None:
        """Return to `pass`."""
        self.set("pass")

    @property
    def open_connections(self) -> int:
        """Return how many client connections are open now."""
        return len(self._conns)

    def _call(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    # the loop ------------------------------------------------------------

    async def _listen(self) -> None:
        if self._server is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self.port = int(sock.getsockname()[1])
        self._server = await asyncio.start_server(self._accept, sock=sock)

    async def _shutdown(self, final: bool = False) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._conns):
            conn.abort()
        self._conns.clear()
        if final:  # end every handler before the loop stops
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _switch(self, mode: ProxyMode) -> None:
        before, self.mode = self.mode, mode
        self.counters.by_mode[mode.name] = self.counters.by_mode.get(mode.name, 0) + 1
        log.info("fault proxy %s: %s -> %s", self.name, before.name, mode.name)
        if mode.name == "refuse":
            await self._shutdown()
            return
        if before.name in ("blackhole", "http_error", "reset") and mode.name != before.name:
            for conn in list(self._conns):  # held or half-answered: the peer starts afresh
                conn.abort()
            self._conns.clear()
        await self._listen()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(reader, writer)
        if self.mode.name == "refuse":  # a connect racing the switch
            self.counters.refused_resets += 1
            _reset(writer)
            return
        self.counters.accepted += 1
        self._conns.add(conn)
        try:
            if self.mode.name == "blackhole":
                await self._swallow(conn)
            elif self.mode.name == "http_error":
                await self._answer_http(conn)
            else:
                await self._forward(conn)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._conns.discard(conn)
            conn.abort()

    async def _swallow(self, conn: _Conn) -> None:
        while await conn.reader.read(_CHUNK_BYTES):
            pass

    async def _forward(self, conn: _Conn) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), 5
            )
        except (OSError, TimeoutError):
            return
        conn.upstream = up_writer
        up = asyncio.ensure_future(self._pump(conn.reader, up_writer, upward=True))
        down = asyncio.ensure_future(self._pump(up_reader, conn.writer, upward=False))
        conn.tasks = [up, down]
        await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
        if self.mode.name == "reset":
            conn.abort()
        for t in conn.tasks:
            if not t.done():
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await t

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, upward: bool
    ) -> None:
        sent_down = 0
        try:
            while data := await src.read(_CHUNK_BYTES):
                mode = self.mode
                if mode.name == "blackhole":  # switched while open: swallow from now on
                    continue
                if mode.name == "slow":
                    await self._delay(mode, len(data))
                if mode.name == "reset" and not upward:
                    keep = max(0, mode.reset_after_bytes - sent_down)
                    if keep < len(data):
                        if keep:
                            dst.write(data[:keep])
                            await dst.drain()
                        self.counters.resets += 1
                        _reset(dst)  # a reset, not a FIN: the client sees ECONNRESET
                        return
                    sent_down += len(data)
                dst.write(data)
                await dst.drain()
                if upward:
                    self.counters.bytes_up += len(data)
                else:
                    self.counters.bytes_down += len(data)
        except OSError:
            _reset(dst)
            return
        with contextlib.suppress(OSError, RuntimeError):
            if dst.can_write_eof():
                dst.write_eof()

    @staticmethod
    async def _delay(mode: ProxyMode, size: int) -> None:
        wait_s = mode.latency_ms / 1000.0
        if mode.bandwidth_bytes_per_s:
            wait_s += size / mode.bandwidth_bytes_per_s
        if wait_s:
            await asyncio.sleep(wait_s)

    async def _answer_http(self, conn: _Conn) -> None:
        status = self.mode.http_status
        reason, code, message = _S3_ERRORS[status]
        head = await conn.reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_HEADER_BYTES:
            return
        await _read_body(conn.reader, _headers(head))
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            "<RequestId>faultproxy</RequestId></Error>"
        ).encode()
        self.counters.http_errors += 1
        conn.writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await conn.writer.drain()


def _headers(head: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
    """Consume a request body (Content-Length or chunked) so the answer is not a reset."""
    if headers.get("expect", "").lower() == "100-continue":
        return  # the client waits for our answer before it sends the body
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return
            await reader.readexactly(size + 2)
    length = int(headers.get("content-length", "0") or 0)
    if length:
        await reader.readexactly(length)
