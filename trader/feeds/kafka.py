"""Live bars from the `bars` topic (infra.bus); bad records become dead letters."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from infra.bus import BusConsumer, KafkaBus
from infra.contracts import Bar, DeadLetter, EventDecodeError, decode
from trader.core.bar import MarketBar
from trader.feeds.base import Feed, FeedDataError

__all__ = ["KafkaFeed"]

log = logging.getLogger(__name__)


class KafkaFeed(Feed):
    """Consume `Bar` events of the wanted symbols; order is checked per symbol."""

    source = "live"
    live = True

    def __init__(
        self,
        bus: KafkaBus,
        *,
        symbols: tuple[str, ...],
        from_beginning: bool = False,
        on_dead_letter: Callable[[DeadLetter], None] | None = None,
        poll_timeout_ms: int = 500,
    ) -> None:
        super().__init__(f"kafka:{bus.topic('bars')}")
        self.bus = bus
        self.symbols = symbols
        self.from_beginning = from_beginning
        self.on_dead_letter = on_dead_letter
        self.poll_timeout_ms = poll_timeout_ms
        self._consumer: BusConsumer | None = None
        self._last_ts: dict[str, int] = {}
        self.connected = False

    async def aiter(self) -> AsyncIterator[MarketBar]:
        topic = self.bus.topic("bars")
        consumer = self.bus.consumer([topic], None, from_beginning=self.from_beginning)
        self._consumer = consumer
        await consumer.start()
        self.connected = True
        try:
            while True:
                for record in await consumer.poll(timeout_ms=self.poll_timeout_ms):
                    bar = self._accept(
                        record.topic, record.partition, record.offset, record.key, record.value
                    )
                    if bar is not None:
                        yield bar
        finally:
            self.connected = False
            await consumer.stop()

    def _accept(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> MarketBar | None:
        try:
            event = decode(value or b"", Bar)
            if event.symbol not in self.symbols:
                return None
            bar = MarketBar.from_event(event)
            last = self._last_ts.get(bar.symbol)
            if last is not None and bar.ts_s <= last:
                reason = "duplicated timestamp" if bar.ts_s == last else "timestamp out of order"
                raise FeedDataError(f"{topic}[{partition}]", offset, f"{bar.symbol}: {reason}")
        except (EventDecodeError, FeedDataError) as exc:
            reason = exc.reason if isinstance(exc, FeedDataError) else str(exc)
            self.stats.skip(reason.split(":")[0] if isinstance(exc, EventDecodeError) else reason)
            log.warning("bad bar at %s[%d]@%d: %s", topic, partition, offset, exc)
            if self.on_dead_letter is not None:
                self.on_dead_letter(
                    DeadLetter.from_record(
                        topic=topic,
                        partition=partition,
                        offset=offset,
                        key=key,
                        value=value,
                        error=exc,
                        consumer="trader",
                    )
                )
            return None
        self._last_ts[bar.symbol] = bar.ts_s
        self.stats.bars += 1
        self.stats.last_ts_s = bar.ts_s
        return bar

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "connected": self.connected}
