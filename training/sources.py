"""Data sources of a run: the real lake, vendor bars and synthetic bars.

Vendor and synthetic bars go through the trader's own backtest path as a
subprocess (`tradeloop backtest ... --events-out DIR`), which writes signals and
outcomes into DIR in the lake layout; training never imports `trader`. Their
stream features are then folded from those outcomes and signals with
`features.stream.StreamFeatureState` (the streams worker's pure function) and
written into DIR's `features` topic, so every source is joined the same way.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infra.settings import Settings, settings_env
from training.config import DataError
from training.datasets import LakeFrames, load_lake

__all__ = ["backtest_to_lake", "collect_sources", "derive_stream_features", "settings_env"]

log = logging.getLogger(__name__)
BACKTEST_TIMEOUT_S = 1800


def backtest_to_lake(settings: Settings, args: Sequence[str], lake_dir: Path, source: str) -> Path:
    """Run `tradeloop backtest ARGS --source SOURCE --events-out LAKE_DIR`; return LAKE_DIR."""
    lake_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-c",
        "from infra.cli import main; main()",
        "backtest",
        *args,
        "--source",
        source,
        "--events-out",
        str(lake_dir),
        "--out",
        str(lake_dir.parent / f"{lake_dir.name}-report"),
        "--no-progress",
        "--no-plot",
    ]
    env = settings_env(settings)
    env["RL_ENABLED"] = "0"  # candidates and outcomes do not depend on sizing
    log.info("running %s backtest: %s", source, " ".join(argv[3:]))
    try:
        proc = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=BACKTEST_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise DataError(f"{source} backtest timed out after {BACKTEST_TIMEOUT_S}s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise DataError(f"{source} backtest failed (exit {proc.returncode}): {' | '.join(tail)}")
    return lake_dir


def derive_stream_features(lake: str, settings: Settings) -> int:
    """Fold a lake's signals and outcomes into stream features; write its `features` topic.

    Events are folded in event-time order (outcomes at their exit time), which is
    the order a streams worker sees them in. Return the number of updates written.
    """
    from features.stream import StreamFeatureState
    from infra.contracts import SignalSnapshot, TradeOutcome, decode
    from infra.lake import iter_payloads, list_files, write_batch
    from infra.objectstore import store_for_uri

    store = store_for_uri(lake, settings)
    if list_files(store, "features"):
        return 0
    events: list[SignalSnapshot | TradeOutcome] = []
    for topic in ("signals", "outcomes"):
        for _p, _o, body in iter_payloads(lake, topic, settings=settings, store=store):
            ev: Any = decode(body)
            if isinstance(ev, SignalSnapshot | TradeOutcome):
                events.append(ev)
    events.sort(key=lambda e: (e.ts_event, 0 if isinstance(e, TradeOutcome) else 1))
    state = StreamFeatureState()
    rows = []
    for offset, ev in enumerate(events):
        for out in state.learn(ev):
            if out.__class__.__name__ == "FeatureUpdate":
                row = out.to_dict()
                row["kafka_partition"] = 0
                row["kafka_offset"] = offset
                rows.append(row)
    if rows:
        write_batch(store, "features", 0, rows)
    return len(rows)


def collect_sources(
    settings: Settings,
    work_dir: Path,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    symbols: Sequence[str] | None = None,
    vendor_paths: Sequence[str] = (),
    synthetic_bars: int = 0,
    include_real: bool = True,
) -> list[tuple[str, LakeFrames]]:
    """Return (source kind, frames) for the real lake, each vendor file and the sim feed."""
    lakes: list[tuple[str, LakeFrames]] = []
    if include_real:
        lakes.append(("real", load_lake("real", settings.lake, settings, start, end, symbols)))
    sym_args = ["--symbols", ",".join(symbols)] if symbols else []
    for i, path in enumerate(p for p in vendor_paths if p):
        if not Path(path).exists():
            raise DataError(f"vendor data {path} does not exist")
        lake = backtest_to_lake(
            settings, ["--data", path, *sym_args], work_dir / f"vendor{i}" / "lake", "vendor"
        )
        derive_stream_features(str(lake), settings)
        lakes.append(("vendor", load_lake(f"vendor{i}", str(lake), settings, None, None, symbols)))
    if synthetic_bars > 0:
        lake = backtest_to_lake(
            settings,
            ["--feed", "sim", "--bars", str(synthetic_bars), *sym_args],
            work_dir / "synthetic" / "lake",
            "synthetic",
        )
        derive_stream_features(str(lake), settings)
        lakes.append(
            ("synthetic", load_lake("synthetic", str(lake), settings, None, None, symbols))
        )
    return lakes
