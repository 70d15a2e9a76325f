"""A SignalR hub endpoint (JSON hub protocol over a websocket) for the ProjectX Gateway simulator.

The protocol as `signalrcore` speaks it: every record is JSON ending in the record
separator 0x1E; the client opens with `{"protocol":"json","version":1}` and the hub
answers `{}`; invocations (`type` 1) name a `target` and `arguments`, and those with
an `invocationId` are answered by a completion (`type` 3); pings (`type` 6) are
echoed; a close (`type` 7) ends the session. `Subscribe...`/`Unsubscribe...`
invocations add or remove a topic: the method's name without the prefix, with its
first argument when there is one (`Orders:7001`, `ContractTrades:CON.F.US.EP.H24`).
The hub pings every session every `keepalive_s` (15 s, ASP.NET Core's default).
`silence()` hangs the hub: sessions stay open, records are read and dropped
unanswered, nothing is written (pings included) and new handshakes go
unanswered, until `speak()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import WSMsgType, web

__all__ = ["RS", "HubClient", "SignalrHub", "topic_of"]

RS = "\x1e"  # SignalR's record separator


def topic_of(method: str, arguments: list[Any]) -> str:
    """Return the topic a `Subscribe...` call names: `Orders:7001`, `ContractTrades:<id>`."""
    name = method.removeprefix("Unsubscribe").removeprefix("Subscribe")
    return f"{name}:{arguments[0]}" if arguments else name


class HubClient:
    """One hub websocket, its topics and the ordered queue of records written to it."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.topics: set[str] = set()
        self.queue: asyncio.Queue[str] = asyncio.Queue()


class SignalrHub:
    """Serve one hub path: handshake, subscriptions, pings; `push` invocations to subscribers."""

    def __init__(self, tokens: set[str], keepalive_s: float = 15.0) -> None:
        self._tokens = tokens
        self.clients: list[HubClient] = []
        self.keepalive_s = keepalive_s
        self.silent = False
        self.pings_sent = 0

    def silence(self) -> None:
        """Hang: keep sessions open, answer and send nothing, until `speak`."""
        self.silent = True

    def speak(self) -> None:
        """Answer again (what was dropped meanwhile stays lost)."""
        self.silent = False

    @property
    def subscribed(self) -> int:
        """Return the number of sessions with at least one topic."""
        return sum(1 for c in self.clients if c.topics)

    def has(self, topic: str) -> bool:
        """Say whether some session subscribed `topic`."""
        return any(topic in c.topics for c in self.clients)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """Run one websocket session (the token comes as `access_token` in the query)."""
        if request.query.get("access_token") not in self._tokens:
            return web.Response(status=401)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        client = HubClient(ws)
        writer = asyncio.create_task(self._write(client))
        pinger = asyncio.create_task(self._keepalive(client))
        handshaken = False
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                if self.silent:
                    continue  # a hung hub: read and dropped
                for record in filter(None, msg.data.split(RS)):
                    try:
                        frame = json.loads(record)
                    except ValueError:
                        continue  # a broken record is dropped, the session goes on
                    if not isinstance(frame, dict):
                        continue
                    if not handshaken:
                        handshaken = frame.get("protocol") == "json"
                        client.queue.put_nowait(
                            "{}" if handshaken else json.dumps({"error": "protocol json only"})
                        )
                        if handshaken:
                            self.clients.append(client)
                        continue
                    self._frame(client, frame)
        finally:
            if client in self.clients:
                self.clients.remove(client)
            writer.cancel()
            pinger.cancel()
        return ws

    def _frame(self, client: HubClient, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == 6:  # ping
            client.queue.put_nowait(json.dumps({"type": 6}))
        elif kind == 1:
            target = str(frame.get("target", ""))
            args = frame.get("arguments") or []
            if target.startswith("Subscribe"):
                client.topics.add(topic_of(target, args))
            elif target.startswith("Unsubscribe"):
                client.topics.discard(topic_of(target, args))
            if frame.get("invocationId"):
                done = {"type": 3, "invocationId": frame["invocationId"], "result": None}
                client.queue.put_nowait(json.dumps(done))
        elif kind == 7:
            asyncio.get_running_loop().create_task(client.ws.close())

    async def _keepalive(self, client: HubClient) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)  # the hub's ping interval
            if client in self.clients and not self.silent:
                self.pings_sent += 1
                client.queue.put_nowait(json.dumps({"type": 6}))

    async def _write(self, client: HubClient) -> None:
        while True:
            record = await client.queue.get()
            if self.silent:
                continue  # a hung hub: nothing reaches the client
            try:
                await client.ws.send_str(record + RS)
            except (ConnectionError, RuntimeError):
                return

    def push(self, topic: str, target: str, arguments: list[Any]) -> None:
        """Send an invocation of `target` to every session subscribed to `topic`, in order."""
        frame = json.dumps({"type": 1, "target": target, "arguments": arguments})
        for client in self.clients:
            if topic in client.topics:
                client.queue.put_nowait(frame)

    async def drop(self) -> None:
        """Close every session."""
        clients, self.clients = self.clients, []
        for c in clients:
            with contextlib.suppress(Exception):
                await c.ws.close()
