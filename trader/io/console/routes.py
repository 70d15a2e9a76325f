"""The console's routes: the page, its assets, a JSON snapshot and the live stream (SSE).

`GET /ui` serves one static page (HTML, CSS and JS shipped in the package; no
CDN, no build step). The page opens `GET /ui/events`, a server-sent event stream
that sends the whole snapshot once, then again only when it changed: a fact from
the engine wakes the stream at once, anything else (a swap, the kill switch, the
broker link) is noticed within `RECHECK_S`; bursts are coalesced to one message per
`MIN_INTERVAL_S`. The page is read-only; its kill switch calls `POST /kill` with the
bearer token the operator types.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse

from trader.io.console.feed import ConsoleFeed
from trader.io.console.state import SwapLog, snapshot

if TYPE_CHECKING:
    from trader.runtime import Runtime

__all__ = ["ASSETS", "MIN_INTERVAL_S", "RECHECK_S", "console_router"]

MIN_INTERVAL_S = 0.25
RECHECK_S = 1.0
KEEPALIVE_S = 15.0
ASSETS = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _asset(name: str) -> bytes:
    return resources.files("trader.io.console").joinpath("static", name).read_bytes()


def _message(event: str, data: bytes) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def console_router(runtime: Runtime) -> APIRouter:
    """Return the console's routes over a running trader (its feed attached to the engine)."""
    if runtime.console is None:
        runtime.console = ConsoleFeed().attach(runtime.engine)
    feed = runtime.console
    log = SwapLog()
    page = _asset("console.html")
    assets = {name: _asset(name) for name in ASSETS}
    router = APIRouter(prefix="/ui", tags=["console"])

    def state() -> bytes:
        return orjson.dumps(snapshot(runtime, feed, log))

    def stamped(body: bytes) -> bytes:
        now = orjson.dumps(datetime.now(UTC).isoformat())
        return body[:-1] + b',"sent_at":' + now + b"}"

    @router.get("", include_in_schema=False)
    async def index() -> Response:
        """The console page."""
        return Response(page, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    @router.get("/static/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        """A stylesheet, script or icon of the page."""
        if name not in assets:
            raise HTTPException(404, f"no console asset named {name!r}")
        return Response(
            assets[name],
            media_type=ASSETS[name],
            headers={**SECURITY_HEADERS, "Cache-Control": "public, max-age=300"},
        )

    @router.get("/state")
    async def current() -> Response:
        """Everything the console shows, as JSON."""
        return Response(stamped(state()), media_type="application/json")

    @router.get("/events")
    async def events(request: Request) -> StreamingResponse:
        """The live snapshot as server-sent events (`state` messages)."""

        async def stream() -> AsyncIterator[bytes]:
            wake = feed.subscribe()
            last = b""
            quiet_since = time.monotonic()
            try:
                yield b"retry: 2000\n\n"
                while not feed.closed:
                    wake.clear()
                    body = state()
                    if body != last:
                        last, quiet_since = body, time.monotonic()
                        yield _message("state", stamped(body))
                    elif time.monotonic() - quiet_since > KEEPALIVE_S:
                        quiet_since = time.monotonic()
                        yield b": keep-alive\n\n"
                    if await request.is_disconnected():
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), RECHECK_S)
                    await asyncio.sleep(MIN_INTERVAL_S)  # coalesce a burst of facts
            finally:
                feed.unsubscribe(wake)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router
