"""The order journal: every order event the trader saw, on disk, for recovery.

The outbox forgets what Kafka acknowledged; the journal keeps the order events a
restarted trader needs to rebuild its positions and working orders (the input of
reconciliation, and the book of a venue that lives in the process, `paper`).
One JSON event per line (`{state}/trader/orders.jsonl`, mode 0600), flushed and
fsynced on every append: order events are few, and each one is a fact the next
start must know. A torn last line (a crash mid-write) is cut off on open.

`compact` rewrites the journal keeping only the events of symbols that still have
a position or working orders, so it stays small over months of flat evenings.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from infra.contracts import EventDecodeError, VenueEvent, decode, encode
from trader.venues.ledger import Ledger, rebuild

__all__ = ["JournalError", "OrderJournal"]

log = logging.getLogger(__name__)


class JournalError(RuntimeError):
    """Raise when the journal cannot be read or written (names the file and line)."""


class OrderJournal:
    """Append order events; read them back; compact to what is still open."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.events: list[VenueEvent] = self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(self._fd, 0o600)
        self.appended = 0

    def _load(self) -> list[VenueEvent]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise JournalError(f"cannot read order journal {self.path}: {exc}") from None
        events: list[VenueEvent] = []
        good = 0
        lines = data.split(b"\n")
        for i, line in enumerate(lines):
            if not line.strip():
                good += len(line) + 1
                continue
            try:
                events.append(decode(line, VenueEvent))
            except EventDecodeError as exc:
                if i == len(lines) - 1:  # no newline yet: a write cut short by a crash
                    log.warning("order journal %s: cutting a torn last line (%s)", self.path, exc)
                    break
                raise JournalError(
                    f"order journal {self.path} line {i + 1} is not an order event ({exc}); "
                    "inspect it before restarting"
                ) from None
            good += len(line) + 1
        if good < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
        return events

    def append(self, event: VenueEvent) -> None:
        """Write one event and fsync it (a venue listener)."""
        try:
            os.write(self._fd, encode(event) + b"\n")
            os.fsync(self._fd)
        except OSError as exc:
            raise JournalError(f"cannot append to order journal {self.path}: {exc}") from None
        self.events.append(event)
        self.appended += 1

    def ledger(self, point_values: Mapping[str, float]) -> Ledger:
        """Return the positions and working orders the journal's events rebuild."""
        return rebuild(self.events, point_values)

    def compact(self, point_values: Mapping[str, float]) -> int:
        """Keep only the events of symbols still open (position or working order); return dropped."""
        ledger = self.ledger(point_values)
        live = {p.symbol for p in ledger.positions()} | {w.symbol for w in ledger.working.values()}
        keep = [e for e in self.events if e.symbol in live]
        dropped = len(self.events) - len(keep)
        if dropped == 0:
            return 0
        self._rewrite(keep)
        return dropped

    def _rewrite(self, events: Iterable[VenueEvent]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        kept = list(events)
        try:
            os.write(fd, b"".join(encode(e) + b"\n" for e in kept))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.close(self._fd)
        os.replace(tmp, self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND, 0o600)
        self.events = kept

    def close(self) -> None:
        """Close the file (appends after this raise `JournalError`)."""
        os.close(self._fd)
        self._fd = -1
