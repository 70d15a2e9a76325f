"""A local Interactive Brokers gateway: the TWS API socket protocol over the paper fill model.

Clients (`ib_async`) connect over loopback exactly as to TWS or IB Gateway; the
wire format lives in `trader.venues.sims.ib_wire`, the orders in
`trader.venues.sims.ib_orders` (`OrderDesk`). Orders are matched by the paper
venue (`trader.venues.paper.PaperVenue`) on the bars given to `on_bar`:
a bracket (parent with `transmit` off, a stop and a limit child sharing an OCA
group, the last child transmitting) becomes one paper bracket; a market order that
closes a position becomes the paper venue's flatten. IB keeps the children at the
absolute prices sent; the simulator does too. Order state, executions and
positions live in the simulator, so they survive client disconnects and gateway
restarts.

Fault switches: `reject_next`, `partial_fills`, `delay_ms` (slow answers),
`drop_clients` (disconnect), `restart_gateway` (the nightly restart; or `stop` and
`start`), `lose_connectivity` / `restore_connectivity` (errors 1100 / 1102) and
`publish_realtime` (bad market data), `withhold_commissions` (no commission
reports), `silence` / `speak` (a hung gateway: connections stay open, nothing is
answered or sent; orders keep working).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import zlib
from collections.abc import Mapping
from datetime import UTC, date, datetime

from features.rolls import QUARTERLY_ROOTS, contract_code, expiry, front_month
from trader.core.bar import MarketBar
from trader.core.instruments import Instrument
from trader.venues.base import SessionState
from trader.venues.paper import PaperVenue, PaperVenueSettings
from trader.venues.sims import ib_wire as w
from trader.venues.sims.ib_orders import ClientSession, Execution, OrderDesk, SimOrder

__all__ = ["IbSimulator", "SimOrder"]

log = logging.getLogger(__name__)


class IbSimulator(OrderDesk):
    """A TWS API server on loopback, matching orders with the paper fill model."""

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        *,
        account: str = "DU0000001",
        host: str = "127.0.0.1",
        port: int = 0,
        slippage_ticks: float = 1.0,
        commission_per_contract_usd: float = 2.25,
        today: date | None = None,
    ) -> None:
        self.account = account
        self.host = host
        self.port = port
        self.delay_ms = 0
        self.cut_off = False  # between `lose_connectivity` and `restore_connectivity`
        self.silent = False  # between `silence` and `speak`
        self.withhold_commissions = False  # fault: executions without commission reports
        self._reject: list[str] = []
        self._listing = _listing(instruments, today or datetime.now(UTC).date())
        self.paper = PaperVenue(
            instruments,
            PaperVenueSettings(
                slippage_ticks=slippage_ticks,
                commission_per_contract_usd=commission_per_contract_usd,
                flatten_at_session_end=False,
                max_hold_bars=1 << 30,
            ),
        )
        self.paper.add_listener(self._on_paper)
        self.orders: dict[int, SimOrder] = {}
        self._by_cid: dict[str, int] = {}
        self._executions: list[Execution] = []
        self._flatten_into: int | None = None
        self._closers: set[int] = set()  # market orders that close positions
        self._next_id = 1
        self._perm = itertools.count(1_000_001)
        self._sessions: list[ClientSession] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: symbol -> (session, request id) of each `reqRealTimeBars` subscription
        self.bar_subscribers: dict[str, list[tuple[ClientSession, int]]] = {}
        self.connections = 0  # accepted handshakes since start
        self.clock_asks = 0  # reqCurrentTime requests answered

    # server --------------------------------------------------------------

    async def start(self) -> None:
        """Listen on `host:port` (port 0 picks a free one, kept across restarts)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close every session and stop listening."""
        self.drop_clients()
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def drop_clients(self) -> None:
        """Close every client connection (orders keep working)."""
        for s in list(self._sessions):
            s.writer.close()
        self._sessions.clear()

    async def restart_gateway(self, down_s: float = 0.5) -> None:
        """Stop the gateway, stay down `down_s` seconds (refusing connections), start again."""
        await self.stop()
        await asyncio.sleep(down_s)  # the gateway's downtime, not a synchronisation
        await self.start()

    @property
    def listening(self) -> bool:
        """Say whether the gateway accepts connections."""
        return self._server is not None

    # fault switches ------------------------------------------------------

    def reject_next(self, reason: str = "simulated rejection") -> None:
        """Reject the next transmitted order (a bracket's parent) with `reason`."""
        self._reject.append(reason)

    def lose_connectivity(self) -> None:
        """Tell clients the gateway lost IB's servers (error 1100); order news stops."""
        self.cut_off = True
        for s in self._sessions:
            self._send(
                s,
                w.encode_error(
                    -1, 1100, "Connectivity between IB and Trader Workstation has been lost."
                ),
            )

    def restore_connectivity(self) -> None:
        """Tell clients the servers are back, data maintained (error 1102)."""
        self.cut_off = False
        for s in self._sessions:
            self._send(
                s,
                w.encode_error(
                    -1,
                    1102,
                    "Connectivity between IB and Trader "
                    "Workstation has been restored - data maintained.",
                ),
            )

    def silence(self) -> None:
        """Hang: keep every connection open, answer nothing, send nothing, until `speak`."""
        self.silent = True

    def speak(self) -> None:
        """Answer again (what was dropped meanwhile stays lost)."""
        self.silent = False

    def partial_fills(self, max_per_bar: int | None) -> None:
        """Fill entries at most `max_per_bar` contracts per bar (None: all at once)."""
        self.paper.config = self.paper.config.model_copy(update={"max_fill_per_bar": max_per_bar})

    # the market ----------------------------------------------------------

    def on_bar(self, bar: MarketBar, session: SessionState) -> None:
        """Match working orders against one bar."""
        self.paper.on_bar(bar, session)

    def publish_bar(self, bar: MarketBar) -> None:
        """Stream a 1-minute bar to its subscribers as the twelve 5-second real-time bars."""
        start = bar.ts_s - 60
        for fields in w.realtime_bars(start, bar.open, bar.high, bar.low, bar.close, bar.volume):
            self.publish_realtime(bar.symbol, fields)

    def publish_realtime(self, symbol: str, fields: list[w.Field]) -> None:
        """Stream one 5-second bar (time, open, high, low, close, volume, wap, count) as given.

        Nothing is checked: a fault switch for bad vendor data as well.
        """
        subs = self.bar_subscribers.get(symbol, [])
        subs[:] = [(s, r) for s, r in subs if s in self._sessions]
        for session, req_id in subs:
            self._send(session, [50, 3, req_id, *fields])

    # sessions ------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = ClientSession(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            if await reader.readexactly(4) != b"API\0":
                raise w.ProtocolError("the client did not open with API\\0")
            buf = bytearray()
            while not (greeting := w.split_frames(buf)):
                chunk = await reader.read(4096) or b""
                if reader.at_eof():
                    return
                if not self.silent:  # a hung gateway does not answer a new client either
                    buf += chunk
            if not greeting[0] or not greeting[0][0].startswith("v"):
                raise w.ProtocolError(f"bad version range {greeting[0]!r}")
            writer.write(w.handshake_answer(datetime.now(UTC)))
            self._sessions.append(session)
            self.connections += 1
            for fields in greeting[1:]:
                self._handle(session, fields)
            while chunk := await reader.read(65536):
                if self.silent:
                    continue  # a hung gateway: read and dropped, never answered
                buf += chunk
                for fields in w.split_frames(buf):
                    self._handle(session, fields)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except w.ProtocolError as exc:
            log.warning("ib sim: closing a client: %s", exc)
        finally:
            if session in self._sessions:
                self._sessions.remove(session)
            for subs in self.bar_subscribers.values():
                subs[:] = [(s, r) for s, r in subs if s is not session]
            writer.close()

    def _handle(self, s: ClientSession, f: list[str]) -> None:
        try:
            msg = int(f[0])
        except (IndexError, ValueError):
            raise w.ProtocolError(f"message without an id: {f[:3]!r}") from None
        if msg == w.START_API:
            self._start_api(s, int(f[2]))
        elif msg == w.PLACE_ORDER:
            self._place(s, w.PlacedOrder.parse(f))
        elif msg == w.CANCEL_ORDER:
            self._cancel(s, int(f[2]))
        elif msg == w.REQ_GLOBAL_CANCEL:
            for o in list(self.orders.values()):
                if o.working and o.placed.parent_id == 0:
                    self._cancel(s, o.placed.order_id)
        elif msg == w.REQ_POSITIONS:
            s.positions = True  # held and traded today (closed ones at zero), as TWS does
            traded = {self.orders[e.order_id].placed.symbol for e in self._executions}
            for symbol in sorted(traded | {p.symbol for p in self.paper.positions()}):
                self._send(s, self._position_fields(symbol))
            self._send(s, [62, 1])
        elif msg == w.REQ_OPEN_ORDERS:
            for o in self.orders.values():
                if o.working and o.client_id == s.client_id:
                    self._report(o, s)
            self._send(s, [53, 1])
        elif msg == w.REQ_COMPLETED_ORDERS:
            self._send(s, [102])
        elif msg == w.REQ_EXECUTIONS:
            self._executions_for(s, int(f[2]))
        elif msg == w.REQ_ACCOUNT_UPDATES:
            for key, value in (("NetLiquidation", "100000"), ("AvailableFunds", "100000")):
                self._send(s, [6, 2, key, value, "USD", self.account])
            self._send(s, [54, 1, self.account])
        elif msg == w.REQ_ACCOUNT_UPDATES_MULTI:
            self._send(s, [74, 1, int(f[2])])
        elif msg == w.REQ_CONTRACT_DETAILS:
            self._contract_details(s, f)
        elif msg == w.REQ_CURRENT_TIME:
            self.clock_asks += 1
            self._send(s, [49, 1, int(time.time())])
        elif msg == w.REQ_IDS:
            self._send(s, [9, 1, self._next_id])
        elif msg == w.REQ_REAL_TIME_BARS:
            self.bar_subscribers.setdefault(f[4], []).append((s, int(f[2])))
        elif msg == w.REQ_AUTO_OPEN_ORDERS:
            pass
        else:
            log.info("ib sim: message %s is not simulated", msg)

    def _start_api(self, s: ClientSession, client_id: int) -> None:
        if any(o is not s and o.client_id == client_id for o in self._sessions):
            self._send(s, w.encode_error(-1, 326, f"client id {client_id} is already in use"))
            s.writer.close()
            return
        s.client_id = client_id
        self._send(s, [9, 1, self._next_id])
        self._send(s, [15, 1, self.account])

    def _contract_details(self, s: ClientSession, f: list[str]) -> None:
        req_id, con_id, symbol, month = int(f[2]), int(f[3] or 0), f[4], f[6]
        local = f[13] if len(f) > 13 else ""
        found = [
            c
            for c in self._listing
            if (con_id and c.con_id == con_id)
            or (
                not con_id
                and c.symbol == symbol
                and (not month or c.last_trade_date.startswith(month))
                and (not local or c.local_symbol == local)
            )
        ]
        if not month and not local and not con_id:
            found = found[:1] if len(found) == 1 else found
        for c in found:
            self._send(s, w.encode_contract_details(req_id, c))
        if not found:
            self._send(s, w.encode_error(req_id, 200, "No security definition has been found"))
        self._send(s, [52, 1, req_id])

    def _executions_for(self, s: ClientSession, req_id: int) -> None:
        for e in self._executions:
            o = self.orders[e.order_id]
            if o.client_id != s.client_id:
                continue
            self._send(s, self._exec_fields(req_id, o, e))
            self._send(s, w.encode_commission_report(e.exec_id, e.commission_usd, 0.0))
        self._send(s, [55, 1, req_id])


def _listing(instruments: Mapping[str, Instrument], today: date) -> list[w.IbContract]:
    """Return the front quarterly contract of every CME root among `instruments`."""
    out: list[w.IbContract] = []
    for symbol, inst in instruments.items():
        if symbol not in QUARTERLY_ROOTS:
            continue
        year, month = front_month(today)
        last = expiry(year, month)
        out.append(
            w.IbContract(
                con_id=zlib.crc32(f"{symbol}{year}{month}".encode()) % 900_000_000 + 100_000_000,
                symbol=symbol,
                month=f"{year}{month:02d}",
                last_trade_date=last.strftime("%Y%m%d"),
                local_symbol=contract_code(symbol, year, month),
                multiplier=f"{inst.point_value_usd:g}",
                min_tick=inst.tick_size,
            )
        )
    return out
