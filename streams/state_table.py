"""The stream feature state in a Faust table: pickled pieces, written at commit time.

The Faust table (memory store, changelog topic) holds each `KeyState` piece as
bytes. Folding an event only marks its piece dirty; right before every Faust offset
commit (`on_commit_initiated`, which runs before Faust flushes its producer and
commits), the dirty pieces are written to the table and sent to the changelog on
their source partition. So the changelog is durable up to every committed offset,
with one changelog record per changed key per commit instead of one per event.
Pieces carry the positions they applied, so a piece that already includes records
beyond the committed offset is still exact: those records are skipped when re-read.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from faust.sensors import Sensor
from faust.transport.producer import ProducerBuffer

from features.stream import KeyState

__all__ = ["CommitHook", "PickledTable", "install_full_flush"]


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

    def flush(self) -> int:
        """Write dirty pieces to the table and its changelog; return how many."""
        n = 0
        for key in sorted(self._dirty):
            piece = self._cache.get(key)
            if piece is None:
                continue
            blob = piece.to_bytes()
            self.table.data[key] = blob
            self.table.send_changelog(piece_partition(piece), key, blob)
            n += 1
        self._dirty.clear()
        self.changelog_writes += n
        return n

    def forget(self) -> None:
        """Flush, then drop the decoded pieces (the table may be recovered next)."""
        self.flush()
        self._cache.clear()

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


class CommitHook(Sensor):  # type: ignore[misc]
    """A Faust sensor that writes the dirty pieces before every offset commit."""

    def __init__(self, pieces: PickledTable, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pieces = pieces

    def on_commit_initiated(self, consumer: Any) -> Any:
        self.pieces.flush()
        return None
