"""R|Protocol's wire for the Rithmic simulator: TLS websocket, framed protobuf, plant sessions.

Rithmic's gateway speaks binary websocket messages, each a 4-byte big-endian
length and one protobuf message whose `template_id` names its type. The message
classes are `async_rithmic`'s generated `*_pb2` modules (its `TEMPLATES_MAP`).
A connection either asks `RequestRithmicSystemInfo` (16) and is answered with the
systems it may log in to, or logs in (`RequestLogin`, 10) to one plant (order,
PnL, ticker: `infra_type`), sends `RequestHeartbeat` (18) and then requests;
`RequestLogout` (12) ends it. A request's answers echo its `user_msg`; a stream of
answers carries `rq_handler_rp_code` "0" on each data message and ends with one
carrying `rp_code` "0" (or an error code and text).

The gateway is TLS only (the client refuses `ws://`): `make_tls` writes a CA and
a server certificate for 127.0.0.1 / localhost signed by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from async_rithmic import protocol_buffers as pb
from async_rithmic.plants.base import TEMPLATES_MAP
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf.message import DecodeError, Message
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from trader.venues.base import VenueError

__all__ = [
    "ORDER_PLANT",
    "PNL_PLANT",
    "TICKER_PLANT",
    "Handler",
    "PlantSession",
    "RithmicGateway",
    "decode",
    "encode",
    "make_tls",
    "message",
    "now_ssboe",
]

log = logging.getLogger(__name__)

TICKER_PLANT, ORDER_PLANT, PNL_PLANT = 1, 2, 4
_PLANTS = {TICKER_PLANT: "ticker", ORDER_PLANT: "order", PNL_PLANT: "pnl"}


def encode(msg: Message) -> bytes:
    """Return one framed message: 4-byte big-endian length, then the protobuf."""
    body = msg.SerializeToString()
    return len(body).to_bytes(4, "big", signed=True) + body


def decode(frame: bytes) -> Message:
    """Parse one framed message into its template's class (`ValueError` when unreadable)."""
    if len(frame) < 4:
        raise ValueError("frame shorter than its length prefix")
    body = frame[4:]
    try:
        base = pb.base_pb2.Base()
        base.ParseFromString(body)
        cls = TEMPLATES_MAP.get(base.template_id)
        if cls is None:
            raise ValueError(f"unknown template id {base.template_id}")
        msg: Message = cls()
        msg.ParseFromString(body)
    except DecodeError as exc:
        raise ValueError(f"not a protobuf message: {exc}") from exc
    return msg


def message(template_id: int, **fields: Any) -> Message:
    """Build the message of `template_id` with `fields` (lists fill repeated fields)."""
    msg: Message = TEMPLATES_MAP[template_id]()
    msg.template_id = template_id  # type: ignore[attr-defined]
    for name, value in fields.items():
        if value is None:
            continue
        if isinstance(value, list):
            getattr(msg, name).extend(value)
        else:
            setattr(msg, name, value)
    return msg


def now_ssboe() -> tuple[int, int]:
    """Return the time as (seconds since the epoch, microseconds)."""
    t = time.time()
    return int(t), int((t % 1) * 1_000_000)


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """Write a CA and a server certificate for 127.0.0.1/localhost; return (ca, cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tradeloop rithmic simulator CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (directory / n for n in ("ca.pem", "server.pem", "server.key"))
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.unlink(missing_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # private from the start
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return ca_path, cert_path, key_path


class PlantSession:
    """One websocket: the plant it logged in to and its subscriptions; writes in order."""

    def __init__(self, ws: ServerConnection, silent: set[str] | None = None) -> None:
        self.ws = ws
        self._silent = set() if silent is None else silent  # the gateway's silent plants
        self.plant = 0
        self.user = ""
        self.order_updates: set[str] = set()  # accounts (RequestSubscribeForOrderUpdates)
        self.pnl_updates: set[str] = set()  # accounts (RequestPnLPositionUpdates)
        self.market_data: set[str] = set()  # contract codes (RequestMarketDataUpdate)
        self.heartbeats = 0
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    @property
    def plant_name(self) -> str:
        """Return the plant's name (`order`, `pnl`, `ticker`; empty before login)."""
        return _PLANTS.get(self.plant, "")

    def silent_for(self, request: Any) -> bool:
        """Say whether the gateway ignores `request` (its plant is silent; see `RithmicGateway`)."""
        plant = self.plant
        if not plant:  # the system info is the ticker plant's first question, then the login
            plant = int(request.infra_type) if request.template_id == 10 else TICKER_PLANT
        return _PLANTS.get(plant, "") in self._silent

    def send(self, *msgs: Message) -> None:
        """Queue messages for this session, in order."""
        for msg in msgs:
            self._queue.put_nowait(encode(msg))

    def close(self) -> None:
        """Close the session once what is queued has been written."""
        self._queue.put_nowait(None)

    async def write(self) -> None:
        """Write queued messages until the session closes."""
        while True:
            frame = await self._queue.get()
            if frame is None:
                with contextlib.suppress(ConnectionClosed):
                    await self.ws.close()
                return
            if self.plant_name in self._silent:
                continue  # a hung gateway: what it would have said is lost
            try:
                await self.ws.send(frame)
            except ConnectionClosed:
                return


#: a plant request's handler: (session, request) -> None; it answers through `session.send`
Handler = Callable[[PlantSession, Any], Awaitable[None] | None]


class RithmicGateway:
    """The TLS websocket endpoint: system info, login, heartbeats, logout; other templates to handlers.

    A plant in `silent` hangs: its websockets stay open (the TLS and websocket
    layers answer, pings included) but its requests, heartbeats and logins are
    dropped unanswered and nothing is written to its sessions until it leaves `silent`.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls_dir: Path,
        users: dict[str, str],
        systems: list[str],
        heartbeat_interval_s: float = 60.0,
        fcm_id: str = "SimFCM",
        ib_id: str = "SimIB",
    ) -> None:
        self.host, self.port = host, port
        self.users = users
        self.systems = systems
        self.heartbeat_interval_s = heartbeat_interval_s
        self.fcm_id, self.ib_id = fcm_id, ib_id
        self.ca_file, cert, key = make_tls(tls_dir)
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(cert, key)
        self.handlers: dict[int, Handler] = {}
        self.sessions: list[PlantSession] = []
        self.delay_ms = 0
        self.logins = 0
        #: plants (`order`, `pnl`, `ticker`) whose sessions stay open but get and send nothing
        self.silent: set[str] = set()
        self._server: Server | None = None

    @property
    def url(self) -> str:
        """Return the gateway's URL (`RITHMIC_URL`)."""
        return f"wss://{self.host}:{self.port}"

    @property
    def listening(self) -> bool:
        """Say whether the gateway accepts connections."""
        return self._server is not None

    async def start(self) -> None:
        """Listen on `host:port` (port 0 picks a free one, kept across restarts)."""
        self._server = await serve(
            self._serve,
            self.host,
            self.port,
            ssl=self._tls,
            reuse_address=True,
            ping_interval=None,
            max_size=2**22,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        """Close every session and stop listening."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        self.sessions.clear()

    async def drop(self) -> None:
        """Close every session as a network failure would (no logout); keep listening."""
        for s in list(self.sessions):
            with contextlib.suppress(Exception):
                await s.ws.close(1011, "connection reset")
        self.sessions.clear()

    def logged_in(self, plant: int) -> list[PlantSession]:
        """Return the sessions logged in to `plant`."""
        return [s for s in self.sessions if s.plant == plant]

    async def _serve(self, ws: ServerConnection) -> None:
        session = PlantSession(ws, self.silent)
        writer = asyncio.create_task(session.write())
        self.sessions.append(session)
        try:
            async for frame in ws:
                if not isinstance(frame, bytes):
                    continue
                try:
                    request = decode(frame)
                except ValueError as exc:
                    session.send(message(75, rp_code=["3", f"bad message: {exc}"]))
                    continue
                if session.silent_for(request):
                    continue  # read and dropped: no answer, no heartbeat answer
                if self.delay_ms:
                    await asyncio.sleep(self.delay_ms / 1000)  # a slow gateway
                await self._dispatch(session, request)
        except ConnectionClosed:
            pass
        finally:
            if session in self.sessions:
                self.sessions.remove(session)
            session.close()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _dispatch(self, session: PlantSession, request: Any) -> None:
        tid = int(request.template_id)
        echo = list(getattr(request, "user_msg", []))
        if tid == 16:
            session.send(
                message(
                    17,
                    system_name=list(self.systems),
                    has_aggregated_quotes=[False] * len(self.systems),
                    rp_code=["0"],
                )
            )
        elif tid == 10:
            self._login(session, request, echo)
        elif tid == 18:
            session.heartbeats += 1
            ssboe, usecs = now_ssboe()
            session.send(message(19, rp_code=["0"], ssboe=ssboe, usecs=usecs))
        elif tid == 12:
            session.send(message(13, user_msg=echo, rp_code=["0"]))
            session.close()
        elif not session.plant:
            session.send(message(75, user_msg=echo, rp_code=["3", "not logged in"]))
        elif tid in self.handlers:
            try:
                answered = self.handlers[tid](session, request)
                if answered is not None:
                    await answered
            except (ValueError, KeyError, TypeError, VenueError) as exc:
                log.warning("rithmic sim: template %d refused: %s", tid, exc)
                answer = tid + 1 if tid + 1 in TEMPLATES_MAP else 75
                session.send(message(answer, user_msg=echo, rp_code=["3", str(exc)]))
        else:
            session.send(message(75, user_msg=echo, rp_code=["6", f"template {tid} unsupported"]))

    def _login(self, session: PlantSession, request: Any, echo: list[str]) -> None:
        ok = (
            self.users.get(request.user) == request.password
            and request.system_name in self.systems
            and int(request.infra_type) in _PLANTS
        )
        if not ok:
            why = "permission denied" if request.system_name in self.systems else "bad system"
            session.send(message(11, user_msg=echo, rp_code=["13", why]))
            return
        session.plant, session.user = int(request.infra_type), request.user
        self.logins += 1
        session.send(
            message(
                11,
                template_version="3.9",
                user_msg=echo,
                rp_code=["0"],
                fcm_id=self.fcm_id,
                ib_id=self.ib_id,
                country_code="US",
                state_code="IL",
                unique_user_id=f"{request.user}-{self.logins}",
                heartbeat_interval=self.heartbeat_interval_s,
            )
        )
