"""The stream feature state in a Faust table: JSON pieces in a changelog.

The Faust table (memory store, changelog topic) holds each `KeyState` piece as
the bytes of its versioned JSON document (`KeyState.to_bytes`). Folding an event marks its piece dirty; before the agent finishes the event
(so before Faust can acknowledge it) `persist` hands the piece to the producer,
addressed to the changelog partition of its source partition. Faust flushes the
producer before it commits offsets, so the changelog covers every committed offset.
Pieces carry the positions they applied, so a piece that already includes records
beyond the committed offset is still exact: those records are skipped when re-read.

The changelog is untrusted input (anyone allowed to produce to it wrote it): a
piece that is not a state document is dropped from the table, counted and sent
to the dead-letter topic; its key starts afresh, and the next write of that key
replaces the bad record in the changelog.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from faust.transport.producer import ProducerBuffer

from features.stream import KeyState, StateDecodeError
from infra.contracts import DeadLetter, encode

__all__ = ["StateTable", "install_full_flush"]

log = logging.getLogger(__name__)

Send = Callable[[str, bytes, bytes, int | None], Awaitable[None]]


async def _flush_until_empty(self: ProducerBuffer) -> None:
    """Drain Faust's producer buffer completely (`flush_atmost` gives up after 0.1 s)."""
    while self.size:
        await self.flush_atmost(None)


def install_full_flush() -> None:
    """Make Faust's pre-commit flush wait for every buffered record (changelog included).

    Faust's `ProducerBuffer.flush` returns as soon as no record was handed to the
    client for 0.1 s, even with records still queued; the offsets commit would then
    cover state whose changelog records were never sent. Idempotent.
    """
    if ProducerBuffer.flush is not _flush_until_empty:
        ProducerBuffer.flush = _flush_until_empty  # type: ignore[method-assign]


def piece_partition(piece: KeyState) -> int:
    """Return the source partition a piece belongs to (all its positions share it)."""
    for pos in piece.positions:
        return int(pos.rsplit(":", 1)[1])
    raise ValueError(f"piece {piece.kind}|{piece.symbol}|{piece.strategy} has no Kafka position")


class StateTable(MutableMapping[str, KeyState]):
    """A Faust table of `KeyState` JSON bytes, seen as a mapping of objects.

    `dead_letter_topic` receives the pieces that fail to decode (sent with the
    next `persist_dirty`); `on_reject` is called once per such piece.
    """

    def __init__(
        self,
        table: Any,
        *,
        dead_letter_topic: str = "",
        consumer: str = "",
        on_reject: Callable[[], None] | None = None,
    ) -> None:
        self.table = table
        self.dead_letter_topic = dead_letter_topic
        self.consumer = consumer
        self.on_reject = on_reject
        self._cache: dict[str, KeyState] = {}
        self._dirty: set[str] = set()
        self._rejected: list[DeadLetter] = []
        self.changelog_writes = 0
        self.rejected_pieces = 0

    async def persist(self, key: str, send: Send) -> bool:
        """Write a changed piece to the table and hand it to the changelog.

        Call it before the event that changed the piece can be acknowledged; when
        the returned awaitable is done the record is in the producer's buffer, which
        Faust flushes before every commit. Return False if the piece was unchanged.
        """
        if key not in self._dirty:
            return False
        self._dirty.discard(key)
        piece = self._cache.get(key)
        if piece is None:
            return False
        blob = piece.to_bytes()
        self.table.data[key] = blob
        # the table's key codec is JSON (a str key), its value codec raw bytes
        topic = self.table.changelog_topic.get_topic_name()
        await send(topic, json.dumps(key).encode(), blob, piece_partition(piece))
        self.changelog_writes += 1
        return True

    async def persist_dirty(self, send: Send) -> int:
        """Persist every changed piece (see `persist`); return how many were sent.

        Dead letters of rejected pieces go out first.
        """
        while self._rejected and self.dead_letter_topic:
            dead = self._rejected.pop(0)
            await send(self.dead_letter_topic, dead.source_topic.encode(), encode(dead), None)
        n = 0
        for key in sorted(self._dirty):
            n += await self.persist(key, send)
        return n

    def forget(self) -> None:
        """Drop the decoded pieces (the table may be recovered from its changelog next).

        A piece changed by an event still in flight stays: it is newer than anything
        in the table, and that event's `persist` still has to send it.
        """
        self._cache = {k: v for k, v in self._cache.items() if k in self._dirty}

    def _load(self, key: str) -> KeyState | None:
        piece = self._cache.get(key)
        if piece is not None:
            return piece
        try:
            blob = self.table.data[key]
        except KeyError:
            return None
        if blob is None:
            return None
        try:
            piece = KeyState.from_bytes(blob)
        except StateDecodeError as exc:
            self._reject(key, blob, exc)
            return None
        self._cache[key] = piece
        return piece

    def _reject(self, key: str, blob: Any, exc: StateDecodeError) -> None:
        del self.table.data[key]
        self.rejected_pieces += 1
        topic = self.table.changelog_topic.get_topic_name()
        log.warning("dropped a changelog state piece for %r that is not a state (%s)", key, exc)
        self._rejected.append(
            DeadLetter.from_record(
                topic=topic,
                partition=-1,  # the table keeps no position of the changelog records it read
                offset=-1,
                key=json.dumps(key).encode(),
                value=blob if isinstance(blob, bytes) else repr(blob).encode(),
                error=exc,
                consumer=self.consumer,
            )
        )
        if self.on_reject is not None:
            self.on_reject()

    def __getitem__(self, key: str) -> KeyState:
        piece = self._load(key)
        if piece is None:
            raise KeyError(key)
        return piece

    def __setitem__(self, key: str, piece: KeyState) -> None:
        self._cache[key] = piece
        self._dirty.add(key)

    def __delitem__(self, key: str) -> None:
        self._cache.pop(key, None)
        self._dirty.discard(key)
        del self.table.data[key]

    def _keys(self) -> set[str]:
        return set(self.table.data.keys()) | set(self._cache)

    def __iter__(self) -> Iterator[str]:
        return iter([k for k in sorted(self._keys()) if self._load(k) is not None])

    def __len__(self) -> int:
        return len(self._keys())
