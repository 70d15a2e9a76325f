"""Start-up and reconnect duties of the trading process: journal, adoption, reconciliation, kill switch.

`Recovery.start()` runs once before the first bar:

1. open the order journal (`{home}/trader/orders.jsonl`), add the outbox's newest
   order event if the journal lacks it (a kill between the two writes), compact it;
2. fold it into the engine's trade book and risk (`trader.core.restore`);
3. let a venue whose book lives in this process (`paper`) rebuild it from the same
   events (`restore`), then journal every order event from now on;
4. reconcile the venue with the journal's ledger, publish one `PositionReconciled`
   per symbol, and hold entries while anything is unexplained; a position whose stop
   was never placed (a kill between an entry's fill and its children) is flattened
   at the first bar;
5. load the kill switch (a halted trader restarts halted) and the prop-firm
   account (`{home}/trader/prop_account.json`), saved again on every change.

`after_bar()` runs after every bar: a venue that came back (disconnected, then
connected, or whose `reconnects` count moved between two bars) is reconciled again, and a prop-firm breach found by risk triggers the
kill switch (the Daily Loss Limit's halt lifts at the next trading day).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra.contracts import (
    Event,
    EventDecodeError,
    OrderEvent,
    OrderSubmitted,
    VenueEvent,
    decode,
    topic_for,
    topic_of,
)
from infra.settings import Settings
from trader.core.engine import Engine
from trader.core.killswitch import (
    KillSwitch,
    killswitch_path,
    trader_state_dir,
    write_private_json,
)
from trader.core.restore import adopt_trades
from trader.core.risk import PropAccount
from trader.venues.base import VenueError
from trader.venues.journal import OrderJournal
from trader.venues.reconcile import Reconciliation, known_order_ids, reconcile

__all__ = ["Recovery", "RecoveryError"]

log = logging.getLogger(__name__)


class RecoveryError(RuntimeError):
    """Raise when a state file of the trader cannot be used (names it and why)."""


_ORDERS_TOPIC = topic_of(VenueEvent)


class Recovery:
    """The trader's durable state around one engine and its venue."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        publish: Callable[[Event], None] | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.venue = engine.venue
        self.dir = state_dir or trader_state_dir(settings)
        self.publish = publish or self._to_sinks
        self.point_values = {s: i.point_value_usd for s, i in engine.instruments.items()}
        self.ticks = {s: i.tick_size for s, i in engine.instruments.items()}
        self.journal: OrderJournal | None = None
        self.killswitch: KillSwitch | None = None
        self.last: Reconciliation | None = None
        self.adopted: list[str] = []
        self.restored: list[str] = []
        self._unprotected: list[str] = []  # symbols to flatten at the first bar
        self._was_connected = True
        self._sessions = 0  # the venue's reconnect count (venues that reconnect between bars)
        self._prop_path = self.dir / "prop_account.json"

    def _to_sinks(self, event: Event) -> None:
        topic = topic_for(event)
        for sink in self.engine.sinks:
            sink(topic, event)

    # start ----------------------------------------------------------------

    def start(
        self, last_spooled: Callable[[], tuple[str, bytes] | None] | None = None
    ) -> Reconciliation:
        """Run the start-up duties (see the module docstring); return the reconciliation.

        `last_spooled()` returns (topic, value) of the newest record in the outbox's spool
        (`Outbox.last_record`): the engine spools each order event before the journal takes
        it, and spools nothing in between, so a process killed between the two left its
        newest spooled record on its way to Kafka and out of the journal; it is journaled
        before anything reads the journal.
        """
        engine, venue = self.engine, self.venue
        self.killswitch = KillSwitch(self.dir / killswitch_path(self.settings).name, engine.risk)
        self._load_prop()
        journal = self.journal = OrderJournal(self.dir / "orders.jsonl")
        newest = last_spooled() if last_spooled is not None else None
        if newest is not None and newest[0] == _ORDERS_TOPIC:
            self._journal_spooled_tail(journal, newest[1])
        dropped = journal.compact(self.point_values)
        events = list(journal.events)
        adopted = adopt_trades(engine.book, engine.risk, events)
        self.adopted = [t.entry_id for t in adopted]
        venue.add_listener(journal.append)  # type: ignore[arg-type]
        restore = getattr(venue, "restore", None)
        if callable(restore):
            self.restored = list(restore(events))
        self._was_connected = venue.connected
        self._sessions = getattr(venue, "reconnects", 0)
        rec = self.reconcile("start")
        stops = {e.parent_id for e in events if isinstance(e, OrderSubmitted) and e.role == "stop"}
        self._unprotected = sorted({t.symbol for t in adopted if t.entry_id not in stops})
        log.info(
            "start-up: journal %d events (%d compacted away), %d open trades adopted, "
            "%d brackets restored at the venue, reconciliation %s",
            len(events),
            dropped,
            len(self.adopted),
            len(self.restored),
            "clean" if rec.clean else f"UNEXPLAINED: {rec.why_refused()}",
        )
        return rec

    def _flatten_unprotected(self) -> None:
        """Flatten the symbols whose adopted position has no stop, at the first bar.

        A process that died between an entry's fill and its bracket's children left a
        position with no stop (the bracket's distances died with it). The first bar
        gives the paper venue a price to exit at.
        """
        symbols, self._unprotected = self._unprotected, []
        for symbol in symbols:
            log.warning(
                "start-up: %s holds a position whose stop was never placed (the process died "
                "after the entry filled); flattening it",
                symbol,
            )
            try:
                self.venue.flatten(symbol, "risk_flatten")
            except VenueError as exc:
                log.error("start-up: cannot flatten %s: %s", symbol, exc)

    @staticmethod
    def _journal_spooled_tail(journal: OrderJournal, spooled_order: bytes | None) -> None:
        """Journal the outbox's newest order event if the journal lacks it (see `start`)."""
        if spooled_order is None:
            return
        try:
            event: Event = decode(spooled_order)
        except EventDecodeError as exc:
            log.error("start-up: the outbox's last order record does not decode: %s", exc)
            return
        if not isinstance(event, OrderEvent) or any(
            e.event_id == event.event_id for e in journal.events
        ):
            return  # a reconciliation record, or journaled already
        journal.append(event)
        log.warning(
            "start-up: the order journal lacked the last spooled order event %s (%s of %s): "
            "the process died between the two writes; journaled it now",
            event.event_id,
            type(event).__name__,
            getattr(event, "client_order_id", "?"),
        )

    def reconcile(self, trigger: str) -> Reconciliation:
        """Compare the venue with the journal now; publish the events; hold or release entries."""
        assert self.journal is not None, "start() first"
        rec = reconcile(
            self.venue,
            self.journal.ledger(self.point_values),
            known_ids=known_order_ids(self.journal.events),
            tick_sizes=self.ticks,
            symbols=self.engine.symbols,
            holds=self.engine.risk,
            trigger=trigger,
        )
        for event in rec.events:
            self.publish(event)
        self.last = rec
        if not rec.clean:
            log.warning("entries refused: %s", rec.why_refused())
        return rec

    # prop-firm account ------------------------------------------------------

    def _load_prop(self) -> None:
        risk = self.engine.risk
        if risk.prop is None:
            return
        try:
            raw = json.loads(self._prop_path.read_text())
            risk.prop.account = PropAccount.from_dict(raw)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            raise RecoveryError(
                f"prop-firm account state {self._prop_path} is unusable ({exc}); fix or remove it "
                "(removing it starts the account again at PROP_START_BALANCE_USD)"
            ) from None
        risk.on_prop_change = self._save_prop

    def _save_prop(self, account: PropAccount) -> None:
        write_private_json(self._prop_path, account.to_dict())

    # every bar --------------------------------------------------------------

    def after_bar(self) -> None:
        """Reconcile after a reconnect; turn a prop-firm breach into the kill switch."""
        if self._unprotected:
            self._flatten_unprotected()
        connected = self.venue.connected
        sessions = getattr(self.venue, "reconnects", 0)
        if connected and (not self._was_connected or sessions != self._sessions):
            self.reconcile("reconnect")
        self._was_connected = connected
        self._sessions = sessions
        risk = self.engine.risk
        while risk.breaches:
            breach = risk.breaches.pop(0)
            hold = risk.holds.get(breach)
            why = hold.why if hold is not None else breach
            until = hold.until_day if hold is not None else None  # the DLL's: the next day
            if self.killswitch is None:
                continue
            try:
                self.killswitch.trigger(self.venue, breach, why, until)
            except Exception:  # the halt is persisted; trading goes on refusing entries
                log.exception("kill switch on %s: the venue failed", breach)

    def status(self) -> dict[str, Any]:
        """Return what start-up did, for logs and /healthz."""
        return {
            "journal": str(self.journal.path) if self.journal else None,
            "adopted": self.adopted,
            "restored": self.restored,
        }

    def close(self) -> None:
        """Close the journal."""
        if self.journal is not None:
            self.journal.close()
            self.journal = None
