"""Walk one history through several engines at once, step by step, on command.

`tradeloop evaluate` (training) drives this module as a subprocess, the way
training reaches the trader everywhere else: one JSON object per line on stdin,
one reply per line on stdout (logs go to stderr). Every arm is a full `Engine`
(features, strategies, decisions, risk, the paper venue) fed the same bars;
arms differ only in the models their `ModelHolder` serves.

Commands:

- `{"op": "run", "until_s": T}`: process the bars whose close is before T (null:
  to the end); write each arm's new trades to `{out}/{arm}/trades/part-NNNNN.parquet`
  and flush the lake of an arm that keeps one. Reply with the bars processed,
  the last bar's time and whether the feed is exhausted.
- `{"op": "swap", "arms": [..], "manifest_key": K}`: verify the signed release at
  key K of the model store (signature, sha256, feature contract, probes: the hot
  swap's checks) and serve it in those arms from the next bar.
- `{"op": "finish"}`: close every arm's positions and counterfactuals at the last
  bar, write the last trades, reply with each arm's status and exit.

A failed command replies `{"ok": false, "error": ..}` and the walk goes on.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from infra.objectstore import LocalObjectStore, ObjectStore, object_store
from infra.settings import Settings
from infra.signing import Keyring
from trader.backtest import TradeRecorder, write_trades
from trader.core.bar import MarketBar
from trader.core.engine import Engine, EngineConfig
from trader.core.instruments import Instrument, instruments_from_settings
from trader.delivery.models import ModelHolder
from trader.delivery.release import (
    ReleaseRejected,
    check_blobs,
    check_manifest,
    fetch_blobs,
    load_checked,
)
from trader.feeds import FILE_KINDS, Feed, open_feed
from trader.feeds.files import FileFeed
from trader.feeds.sanity import DESIGN_INTERVAL_S, MAX_INTERVAL_S, check_fit
from trader.feeds.sim import SimFeed
from trader.io.events_out import LakeSink

__all__ = ["Arm", "Walker", "main"]

log = logging.getLogger(__name__)


@dataclass
class Arm:
    """One engine of the walk, its recorder, optional lake and serving release."""

    name: str
    engine: Engine
    recorder: TradeRecorder
    lake: LakeSink | None = None
    sequence: int = 0
    release: str = ""
    written: int = 0
    parts: int = field(default=0)


class Walker:
    """The arms, the shared bar iterator and the model store releases come from."""

    def __init__(
        self,
        settings: Settings,
        bars: Iterator[MarketBar],
        arms: list[Arm],
        out: Path,
        store: ObjectStore,
        local_store: bool,
    ) -> None:
        self.settings = settings
        self.bars = bars
        self.arms = {a.name: a for a in arms}
        self.out = out
        self.store = store
        self.local_store = local_store
        self.keyring = Keyring.for_trader(settings)
        self.pending: MarketBar | None = None
        self.done = False
        self.processed = 0
        self.last_ts_s: int | None = None
        self.hours: set[int] = set()
        self.total_bars: int | None = None  # hours (epoch s // 3600) that had a bar

    def run(self, until_s: int | None) -> dict[str, Any]:
        """Feed every arm the bars that close before `until_s`; write their new trades."""
        engines = [a.engine.on_bar for a in self.arms.values()]
        n = 0
        while not self.done:
            bar = self.pending
            if bar is None:
                bar = next(self.bars, None)
                if bar is None:
                    self.done = True
                    break
            if until_s is not None and bar.ts_s >= until_s:
                self.pending = bar
                break
            self.pending = None
            for on_bar in engines:
                on_bar(bar)
            n += 1
            if bar.ts_s != self.last_ts_s:
                self.last_ts_s = bar.ts_s
                self.hours.add(bar.ts_s // 3600)
        self.processed += n
        self._write()
        return {
            "ok": True,
            "bars": n,
            "processed": self.processed,
            "last_ts_s": self.last_ts_s,
            "next_ts_s": self.pending.ts_s if self.pending is not None else None,
            "done": self.done,
        }

    def swap(self, arms: list[str], manifest_key: str) -> dict[str, Any]:
        """Verify a release of the model store and serve it in `arms` from the next bar."""
        unknown = [a for a in arms if a not in self.arms]
        if unknown:
            return {"ok": False, "error": f"unknown arms {unknown}"}
        try:
            raw = self.store.get(manifest_key)
        except OSError as exc:
            return {"ok": False, "error": f"no manifest at {manifest_key}: {exc}"}
        try:
            serving = min(self.arms[a].sequence for a in arms)
            settings = None if self.local_store else self.settings  # URI pins: remote only
            manifest = check_manifest(raw, serving, self.keyring, settings=settings)
            if self.local_store:
                blobs = {a.family: self.store.get(a.uri) for a in manifest.artifacts}  # keys
                check_blobs(manifest, blobs)
            else:
                blobs = fetch_blobs(manifest, self.settings)
            models = load_checked(manifest, blobs)
        except ReleaseRejected as exc:
            return {"ok": False, "error": f"release refused ({exc.code}): {exc.detail}"}
        except OSError as exc:  # an artifact missing from the local store
            return {"ok": False, "error": f"release refused (missing_artifact): {exc}"}
        for name in arms:
            arm = self.arms[name]
            arm.engine.holder.swap(models)
            arm.sequence, arm.release = manifest.sequence, manifest.release
        return {"ok": True, "release": manifest.release, "sequence": manifest.sequence}

    def finish(self) -> dict[str, Any]:
        """Close every arm at the last bar; write the last trades; return each arm's status."""
        for arm in self.arms.values():
            arm.engine.finish()
        self._write()
        status = {
            name: {**a.engine.status(), "trades": a.written, "release": a.release}
            for name, a in self.arms.items()
        }
        return {
            "ok": True,
            "processed": self.processed,
            "arms": status,
            "hours": sorted(self.hours),
        }

    def first_ts_s(self) -> int | None:
        """Return the first bar's time without consuming it (None: no bars)."""
        if self.pending is None and not self.done:
            self.pending = next(self.bars, None)
            self.done = self.pending is None
        return self.pending.ts_s if self.pending is not None else None

    def _write(self) -> None:
        for arm in self.arms.values():
            new = arm.recorder.trades[arm.written :]
            if new:
                path = self.out / arm.name / "trades" / f"part-{arm.parts:05d}.parquet"
                write_trades(new, path)
                arm.parts += 1
                arm.written += len(new)
            if arm.lake is not None:
                arm.lake.flush()


def _total_bars(feed: Feed) -> int | None:
    """Return how many bars the feed will give, when that is known beforehand."""
    if isinstance(feed, SimFeed):
        if feed.days is None:
            return None
        per_day = sum(len(feed._session_times(d)) for d in feed.trading_days())
        return per_day * len(feed.symbols)
    return len(feed) if hasattr(feed, "__len__") else None


def _long_bar_feed(
    args: argparse.Namespace, symbols: tuple[str, ...], instruments: dict[str, Instrument]
) -> Feed:
    """Open a bars file whose bars may be longer than `MAX_INTERVAL_S` (hourly, daily).

    The price-scale check still runs; the bar-length refusal becomes a warning.
    """
    kind, _, rest = args.feed.partition(":")
    path = rest if kind in FILE_KINDS else args.feed
    feed = FileFeed(
        Path(path),
        symbol=args.symbol,
        symbols=symbols,
        tz=args.tz,
        bar_ts=args.bar_ts,
        skip_bad=args.skip_bad_rows,
        fmt=kind if kind in FILE_KINDS else None,
    )
    frame = feed.frame
    interval_s = int(frame["interval_s"].iloc[0]) if len(frame) else DESIGN_INTERVAL_S
    feed.warnings = check_fit(frame.assign(interval_s=DESIGN_INTERVAL_S), instruments, feed.name)
    if interval_s > MAX_INTERVAL_S:
        log.warning(
            "%s: %d s bars traded by strategies designed for %d s bars (--allow-long-bars)",
            feed.name,
            interval_s,
            DESIGN_INTERVAL_S,
        )
    return feed


def build(args: argparse.Namespace, settings: Settings) -> Walker:
    """Open the feed and one engine per arm as the arguments say."""
    symbols = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
    instruments = instruments_from_settings(settings)
    feed = (
        _long_bar_feed(args, symbols, instruments)
        if args.allow_long_bars
        else open_feed(
            args.feed,
            symbols=symbols,
            seed=args.seed,
            days=args.days,
            symbol=args.symbol,
            tz=args.tz,
            bar_ts=args.bar_ts,
            skip_bad=args.skip_bad_rows,
            instruments=instruments,
        )
    )
    out = Path(args.out)
    lakes = set(filter(None, args.lake_arms.split(",")))
    arms = []
    for name in filter(None, args.arms.split(",")):
        recorder = TradeRecorder()
        lake = LakeSink(str(out / name / "lake"), settings) if name in lakes else None
        sinks: list[Any] = [recorder] if lake is None else [recorder, lake]
        engine = Engine(
            settings,
            EngineConfig(
                symbols=symbols,
                source=args.source or feed.source,
                run_id=f"{args.run_id}-{name}",
                record_metrics=False,
            ),
            ModelHolder(),
            sinks=sinks,
        )
        arms.append(Arm(name, engine, recorder, lake))
    local = bool(args.store_dir)
    store: ObjectStore = LocalObjectStore(args.store_dir) if local else object_store(settings)
    walker = Walker(settings, iter(feed), arms, out, store, local)
    walker.total_bars = _total_bars(feed)
    return walker


def serve(walker: Walker, commands: IO[str], replies: IO[str]) -> None:
    """Answer commands until `finish` or the end of input."""
    for line in commands:
        if not line.strip():
            continue
        try:
            cmd = json.loads(line)
            op = cmd.get("op")
            if op == "run":
                reply = walker.run(cmd.get("until_s"))
            elif op == "swap":
                reply = walker.swap(list(cmd["arms"]), str(cmd["manifest_key"]))
            elif op == "finish":
                reply = walker.finish()
            else:
                reply = {"ok": False, "error": f"unknown op {op!r}"}
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "error": f"bad command {line.strip()[:200]!r}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
        if reply.get("ok") and cmd.get("op") == "finish":
            return


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trader.walk", description=__doc__)
    p.add_argument("--feed", required=True, help="sim | csv:PATH | parquet:PATH | dbn:PATH")
    p.add_argument("--symbols", required=True)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--days", type=int, default=None)
    p.add_argument("--symbol", default=None)
    p.add_argument("--tz", default="UTC")
    p.add_argument("--bar-ts", choices=("close", "open"), default="close")
    p.add_argument("--skip-bad-rows", action="store_true")
    p.add_argument("--allow-long-bars", action="store_true", help="trade bars over 15 minutes")
    p.add_argument("--arms", required=True, help="comma-separated arm names")
    p.add_argument("--lake-arms", default="", help="arms that write an event lake")
    p.add_argument("--out", required=True)
    p.add_argument("--run-id", default="walk")
    p.add_argument("--source", default=None)
    p.add_argument("--store-dir", default="", help="local model store (default: the configured)")
    return p


def main(argv: list[str] | None = None) -> None:
    """Build the walk and serve commands on stdin; replies go to the real stdout."""
    args = _parser().parse_args(argv)
    replies = sys.stdout
    sys.stdout = sys.stderr  # nothing but replies on the protocol stream
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = Settings()
    try:
        walker = build(args, settings)
    except ValueError as exc:  # FeedDataError, InstrumentError
        replies.write(json.dumps({"ok": False, "error": str(exc)}) + "\n")
        replies.flush()
        raise SystemExit(2) from None
    hello = {
        "ok": True,
        "arms": list(walker.arms),
        "first_ts_s": walker.first_ts_s(),
        "total_bars": walker.total_bars,
    }
    replies.write(json.dumps(hello) + "\n")
    replies.flush()
    serve(walker, sys.stdin, replies)


if __name__ == "__main__":
    main()
