"""A durable outbox: an append-only spool on disk, drained to Kafka in the background.

The spool is here; the drain thread is `trader.io.drainer.OutboxDrainer`.

Trading appends events to segment files (`seg-{first_seq:016d}.log`, frames of
`u32 length | u32 crc32 | u16 topic | topic | u16 key | key | value`) and never
waits for Kafka. A drain thread with its own event loop reads the spool from the
persisted cursor, sends records in spool order through `infra.bus`, and advances
the cursor (`cursor.json`, replaced atomically) only for records the broker
acknowledged. Records acknowledged out of order after a failed one are remembered
in the cursor file and not sent again. With the broker down the spool grows; on
reconnect (a fresh idempotent producer, topics ensured) it drains in order.

Guarantees: nothing appended is lost (frames are flushed to the OS on append and
fsynced on every append with `fsync="always"`, every `fsync_interval_s` with
`"interval"`, and on close; a torn tail frame after a crash is cut off on open).
A write that fails (a full disk: ENOSPC) leaves no torn frame behind: the record is
held in memory, in order, and written before any later one once the disk takes
writes again; `on_write_error` / `on_write_ok` tell the trader (it stops opening
positions meanwhile). Each record reaches Kafka once: before the drainer sends from
a fresh producer (a restart, or a reconnect after a lost ack) it reads the tail of
the topics it is about to send to and skips the spooled records the broker already
has (an ack lost to a crash between the broker's ack and the cursor write). A batch
the broker answers as a duplicate (offsets from -1) is not taken as delivered: the
drainer reconnects and looks for its records the same way.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra.contracts import TOPICS, Event, encode, event_key
from infra.crash import CrashPoint, armed, crash_point

__all__ = [
    "FSYNC_POLICIES",
    "OUTBOX_HOLD",
    "Outbox",
    "OutboxError",
    "fsync_policy",
]

log = logging.getLogger(__name__)

_HEAD = struct.Struct("<II")
_LEN16 = struct.Struct("<H")
SEGMENT_BYTES = 16 * 1024 * 1024
#: When the spool fsyncs: after every append, or at most once per `fsync_interval_s`.
FSYNC_POLICIES = ("always", "interval")
#: The risk hold a trader places while its spool cannot write.
OUTBOX_HOLD = "outbox_write_failed"
#: What a trader spools: every topic but the streams worker's outputs and the models.
TRADER_TOPICS: tuple[str, ...] = tuple(
    t for t in TOPICS if t not in ("features", "drift", "models")
)


class OutboxError(RuntimeError):
    """Raise when the spool directory cannot be used."""


def fsync_policy(setting: str, venue: str) -> str:
    """Return the fsync policy of `OUTBOX_FSYNC`: unset, `always` unless the venue is paper."""
    return setting or ("interval" if venue == "paper" else "always")


def _frame(topic: str, key: bytes | None, value: bytes) -> bytes:
    t = topic.encode()
    k = key or b""
    body = b"".join((_LEN16.pack(len(t)), t, _LEN16.pack(len(k)), k, value))
    return _HEAD.pack(len(body), zlib.crc32(body)) + body


def _unframe(body: bytes) -> tuple[str, bytes | None, bytes]:
    (tl,) = _LEN16.unpack_from(body, 0)
    topic = body[2 : 2 + tl].decode()
    (kl,) = _LEN16.unpack_from(body, 2 + tl)
    start = 4 + tl
    key = body[start : start + kl] or None
    return topic, key, body[start + kl :]


def _scan(path: Path) -> tuple[int, int]:
    """Return (valid records, valid bytes) of a segment; stop at the first bad frame."""
    count = pos = 0
    with open(path, "rb") as fh:
        data = fh.read()
    while pos + _HEAD.size <= len(data):
        length, crc = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + length
        if end > len(data) or zlib.crc32(data[pos + _HEAD.size : end]) != crc:
            break
        count += 1
        pos = end
    return count, pos


class Outbox:
    """The spool: `append` from the trading thread, `read`/`commit` from the drainer."""

    def __init__(
        self,
        directory: str | Path,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        fsync: str = "interval",
        fsync_interval_s: float = 1.0,
        on_write_error: Callable[[str], None] | None = None,
        on_write_ok: Callable[[], None] | None = None,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise OutboxError(f"fsync policy {fsync!r} is not one of {FSYNC_POLICIES}")
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(f"cannot create outbox directory {self.dir}: {exc}") from None
        self.segment_bytes = segment_bytes
        self.fsync_always = fsync == "always"
        self.fsync_interval_s = fsync_interval_s
        self.on_write_error = on_write_error
        self.on_write_ok = on_write_ok
        #: frames a failed write left in memory, in order; written before any new one
        self._held: deque[bytes] = deque()
        #: why the last write failed while writes fail ("" when they succeed)
        self.write_error = ""
        self.write_failures = 0
        self._lock = threading.Lock()
        self.cursor, self._acked_ahead = self._load_cursor()
        self._segments: list[tuple[int, Path]] = []
        seq = self.cursor
        for path in sorted(self.dir.glob("seg-*.log")):
            first = int(path.stem.split("-")[1])
            count, valid = _scan(path)
            if path.stat().st_size != valid:
                log.warning("outbox: cutting a torn tail off %s at byte %d", path.name, valid)
                with open(path, "r+b") as fh:
                    fh.truncate(valid)
            self._segments.append((first, path))
            seq = max(seq, first + count)
        self.next_seq = seq
        self._fh: Any = None
        #: (segment, seq, byte offset) where the last read stopped; used while <= the cursor
        self._resume: tuple[Path, int, int] | None = None
        self._fh_bytes = 0
        self._last_fsync = time.monotonic()
        self.appended = 0

    # cursor -------------------------------------------------------------

    def _load_cursor(self) -> tuple[int, set[int]]:
        path = self.dir / "cursor.json"
        try:
            raw = json.loads(path.read_text())
            return int(raw["next_seq"]), {int(s) for s in raw.get("acked_ahead", [])}
        except FileNotFoundError:
            return 0, set()
        except (ValueError, KeyError, TypeError) as exc:
            raise OutboxError(f"{path} is corrupt ({exc}); inspect it before restarting") from None

    def _save_cursor(self) -> None:
        path = self.dir / "cursor.json"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump({"next_seq": self.cursor, "acked_ahead": sorted(self._acked_ahead)}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    # writing (trading thread) -------------------------------------------

    def append(self, topic: str, key: bytes | None, value: bytes) -> int | None:
        """Append one record; return its sequence number. Never touches the network.

        If the write fails (ENOSPC), hold the record in memory and return None.
        """
        frame = _frame(topic, key, value)
        with self._lock:
            self._held.append(frame)
            if not self._write_held():
                return None
            return self.next_seq - 1

    def write_held(self) -> bool:
        """Try again to write the records a failed write held; return True if none is left."""
        with self._lock:
            return self._write_held()

    @property
    def held(self) -> int:
        """Return how many records wait in memory for the disk to take writes again."""
        return len(self._held)

    def _write_held(self) -> bool:
        while self._held:
            try:
                self._write(self._held[0])
            except OSError as exc:
                self._write_failed(exc)
                return False
            self._held.popleft()
        if self.write_error:
            log.warning("outbox: writes succeed again after %s", self.write_error)
            self.write_error = ""
            if self.on_write_ok is not None:
                self.on_write_ok()
        return True

    def _write(self, frame: bytes) -> None:
        if self._fh is None or self._fh_bytes + len(frame) > self.segment_bytes:
            self._roll()
        half = len(frame) // 2
        try:
            self._fh.write(frame[:half])
            if armed():  # make the half frame a torn write on disk, as a crash leaves it
                self._fh.flush()
                crash_point(CrashPoint.OUTBOX_MID_APPEND)
            self._fh.write(frame[half:])
            self._fh.flush()
            now = time.monotonic()
            if self.fsync_always or now - self._last_fsync >= self.fsync_interval_s:
                os.fsync(self._fh.fileno())
                self._last_fsync = now
        except OSError:
            self._cut_torn_frame()
            raise
        self._fh_bytes += len(frame)
        self.next_seq += 1
        self.appended += 1

    def _cut_torn_frame(self) -> None:
        """Close the segment and cut what a failed write left after the last whole frame."""
        fh, self._fh = self._fh, None
        with contextlib.suppress(OSError):
            fh.close()  # flushing the rest of the buffer may fail again: it is cut below
        path = self._segments[-1][1]
        with contextlib.suppress(OSError), open(path, "r+b") as out:
            out.truncate(self._fh_bytes)

    def _write_failed(self, exc: OSError) -> None:
        self.write_failures += 1
        if self.write_error:
            return
        name = errno.errorcode.get(exc.errno or 0, "OSError")
        self.write_error = f"{name}: {exc.strerror or exc}"
        log.critical(
            "outbox: cannot write to %s (%s); records are held in memory until it can",
            self.dir,
            self.write_error,
        )
        if self.on_write_error is not None:
            self.on_write_error(self.write_error)

    def append_event(self, topic: str, event: Event) -> int | None:
        """Append an event under its short topic name, keyed like the bus."""
        return self.append(topic, event_key(event), encode(event))

    def sink(self, topic: str, event: Event) -> None:
        """Engine sink: spool every emitted event."""
        self.append_event(topic, event)

    def _roll(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        path = self.dir / f"seg-{self.next_seq:016d}.log"
        self._fh = open(path, "ab")  # noqa: SIM115 (held open across appends)
        self._fh_bytes = path.stat().st_size
        if not self._segments or self._segments[-1][1] != path:  # an empty one left before
            self._segments.append((self.next_seq, path))

    def close(self) -> None:
        """Write what is held, flush, fsync and close the current segment."""
        with self._lock:
            if self._held and not self._write_held():
                log.critical(
                    "outbox: %d records held in memory could not be written (%s) and are lost",
                    len(self._held),
                    self.write_error,
                )
            if self._fh is not None:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
                self._fh = None

    # reading (drain thread) ---------------------------------------------

    @property
    def depth(self) -> int:
        """Return how many records wait for an ack."""
        return self.next_seq - self.cursor - len(self._acked_ahead)

    def last_record(self) -> tuple[str, bytes] | None:
        """Return (topic, value) of the newest record in the spool (None: empty).

        Reads the newest segment that holds a record; only what is on disk.
        """
        with self._lock:
            segments = list(self._segments)
        for _, path in reversed(segments):
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # drained and deleted meanwhile
                continue
            found: tuple[str, bytes] | None = None
            pos = 0
            while pos + _HEAD.size <= len(data):
                length, crc = _HEAD.unpack_from(data, pos)
                end = pos + _HEAD.size + length
                body = data[pos + _HEAD.size : end]
                if end > len(data) or zlib.crc32(body) != crc:
                    break
                topic, _, value = _unframe(body)
                found, pos = (topic, value), end
            if found is not None:
                return found
        return None

    def read(self, max_records: int = 500) -> list[tuple[int, str, bytes | None, bytes]]:
        """Return up to `max_records` unacknowledged records from the cursor on, in order."""
        with self._lock:
            segments = list(self._segments)
            end_seq = self.next_seq
        out: list[tuple[int, str, bytes | None, bytes]] = []
        seq = self.cursor
        hint = self._resume
        for i, (first, path) in enumerate(segments):
            nxt = segments[i + 1][0] if i + 1 < len(segments) else end_seq
            if nxt <= seq:
                continue
            pos, s = 0, first
            if hint is not None and hint[0] == path and hint[1] <= seq:
                s, pos = hint[1], hint[2]  # start where an earlier read stopped
            with open(path, "rb") as fh:
                fh.seek(pos)
                data = fh.read()
            base, pos = pos, 0
            while pos + _HEAD.size <= len(data) and s < end_seq and len(out) < max_records:
                length, crc = _HEAD.unpack_from(data, pos)
                end = pos + _HEAD.size + length
                if end > len(data):
                    break
                body = data[pos + _HEAD.size : end]
                if zlib.crc32(body) != crc:
                    raise OutboxError(f"outbox: bad frame in {path.name} at byte {base + pos}")
                if s >= seq and s not in self._acked_ahead:
                    topic, key, value = _unframe(body)
                    out.append((s, topic, key, value))
                pos, s = end, s + 1
                self._resume = (path, s, base + pos)
            if len(out) >= max_records:
                break
        return out

    def commit(self, acked: list[int]) -> None:
        """Record acknowledged sequence numbers; advance and persist the cursor."""
        if not acked:
            return
        ahead = self._acked_ahead
        ahead.update(acked)
        cur = self.cursor
        while cur in ahead:
            ahead.discard(cur)
            cur += 1
        self.cursor = cur
        self._save_cursor()
        self._delete_drained()

    def _delete_drained(self) -> None:
        with self._lock:
            while len(self._segments) > 1 and self._segments[1][0] <= self.cursor:
                _, path = self._segments.pop(0)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
