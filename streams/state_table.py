"""The stream feature state in a Faust table: pickled pieces in a changelog.

The Faust table (memory store, changelog topic) holds each `KeyState` piece as
bytes. Folding an event marks its piece dirty; before the agent finishes the event
(so before Faust can acknowledge it) `persist` hands the piece to the producer,
addressed to the changelog partition of its source partition. Faust flushes the
producer before it commits offsets, so the changelog covers every committed offset.
Pieces carry the positions they applied, so a piece that already includes records
beyond the committed offset is still exact: those records are skipped when re-read.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from faust.transport.producer import ProducerBuffer

from features.stream import KeyState

__all__ = ["PickledTable", "install_full_flush"]

Send = Callable[[str, bytes, bytes, int], Awaitable[None]]


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


class PickledTable(MutableMapping[str, KeyState]):
    """A Faust table of pickled `KeyState` bytes, seen as a mapping of objects."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._cache: dict[str, KeyState] = {}
        self._dirty: set[str] = set()
        self.changelog_writes = 0

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
        """Persist every changed piece (see `persist`); return how many were sent."""
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

    def __getitem__(self, key: str) -> KeyState:
        piece = self._cache.get(key)
        if piece is None:
            try:
                blob = self.table.data[key]
            except KeyError:
                raise KeyError(key) from None
            if blob is None:
                raise KeyError(key)
            piece = KeyState.from_bytes(blob)
            self._cache[key] = piece
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
        return iter(sorted(self._keys()))

    def __len__(self) -> int:
        return len(self._keys())
