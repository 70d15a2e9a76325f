"""The containers of the training dataset and the lake reads they start from.

`LakeFrames` names one lake's window and loads its signals and outcomes on first
use; `TrainingData` holds the labelled frames every trainer reads. Both dataset
engines (`training.datasets` in pandas, `training.pit_duckdb` out of core) build
the same `TrainingData`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from features.vectors import EXEC_FEATURE_NAMES, META_FEATURE_NAMES
from infra.contracts import FEATURE_NAMES, STRATEGIES
from infra.settings import Settings
from training.config import DataError

__all__ = [
    "OUTCOME_COLS",
    "OWN_STREAM",
    "SIGNAL_COLS",
    "STREAM_REFS",
    "STREAM_VIEW",
    "WIDE_COLUMNS",
    "LakeFrames",
    "TrainingData",
    "keep_recent",
    "load_lake",
    "read_columns",
]

#: The strategy_stats features the models use, as Feast references.
OWN_STREAM: tuple[str, ...] = ("win_rate", "mean_r", "ewm_r", "drawdown_r", "trade_count")
STREAM_REFS: tuple[str, ...] = tuple(f"strategy_stats:{n}" for n in OWN_STREAM)
STREAM_VIEW = "strategy_stats"
#: Every strategy's stream features per decision point, `{strategy}_{feature}`.
WIDE_COLUMNS: tuple[str, ...] = tuple(f"{s}_{n}" for s in STRATEGIES for n in OWN_STREAM)

SIGNAL_COLS: tuple[str, ...] = ("event_id", "event_timestamp", "symbol", "strategy", "side", "entry", "stop", "target", "source", "run_id", "taken", *FEATURE_NAMES)  # fmt: skip
OUTCOME_COLS: tuple[str, ...] = ("signal_id", "r_multiple", "exit_ts", "counterfactual", "event_timestamp")  # fmt: skip


@dataclass
class LakeFrames:
    """One lake's window (where, when, which symbols); its signals and outcomes on first use.

    The out-of-core engine reads the lake's files itself and never loads the frames.
    """

    name: str
    lake: str
    settings: Settings
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    symbols: tuple[str, ...] | None = None
    _frames: tuple[pd.DataFrame, pd.DataFrame] | None = field(default=None, repr=False)

    def _load(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        if self._frames is None:
            self._frames = _read_frames(
                self.lake, self.settings, self.start, self.end, self.symbols
            )
        return self._frames

    @property
    def signals(self) -> pd.DataFrame:
        """Return the signal rows (deduplicated by `event_id`, last write wins)."""
        return self._load()[0]

    @property
    def outcomes(self) -> pd.DataFrame:
        """Return the outcome rows (deduplicated by `signal_id`, last write wins)."""
        return self._load()[1]


@dataclass
class TrainingData:
    """The merged, labelled, time-ordered frames every trainer reads."""

    signals: pd.DataFrame  # one row per signal with outcome: EXEC columns, r, weight, group
    groups: pd.DataFrame  # one row per decision point: META columns, label, weight
    counts: dict[str, int] = field(default_factory=dict)
    pit_engine: str = ""

    @property
    def window(self) -> tuple[dt.datetime, dt.datetime]:
        """Return the first and last signal time."""
        ts = self.signals["event_timestamp"]
        return pd.Timestamp(ts.min()).to_pydatetime(), pd.Timestamp(ts.max()).to_pydatetime()

    def exec_matrix(self, rows: pd.DataFrame | None = None) -> np.ndarray:
        """Return the exec model input [N, len(EXEC_FEATURE_NAMES)] (float32)."""
        frame = self.signals if rows is None else rows
        return frame[list(EXEC_FEATURE_NAMES)].to_numpy(dtype=np.float32)

    def meta_matrix(self, rows: pd.DataFrame | None = None) -> np.ndarray:
        """Return the meta model input [N, len(META_FEATURE_NAMES)] (float32)."""
        frame = self.groups if rows is None else rows
        return frame[list(META_FEATURE_NAMES)].to_numpy(dtype=np.float32)


def keep_recent(data: TrainingData, max_points: int | None) -> TrainingData:
    """Keep the most recent `max_points` decision points and their signals (None: all).

    Decision points keep their numbers; the counts say what the window left out.
    """
    total = len(data.groups)
    if max_points is None or total <= max_points:
        return data
    lo = total - max_points
    keep = data.signals["group"].to_numpy() >= lo
    data.counts = {
        **data.counts,
        "points_before_window": lo,
        "signals_before_window": int((~keep).sum()),
    }
    data.signals = data.signals[keep].reset_index(drop=True)
    data.groups = data.groups[data.groups["group"].to_numpy() >= lo].reset_index(drop=True)
    return data


def load_lake(
    name: str,
    lake: str,
    settings: Settings,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    symbols: Sequence[str] | None = None,
) -> LakeFrames:
    """Return a lake's window: signals in [start, end), outcomes of any time after `start`."""
    return LakeFrames(name, lake, settings, start, end, tuple(symbols) if symbols else None)


def _read_frames(
    lake: str,
    settings: Settings,
    start: dt.datetime | None,
    end: dt.datetime | None,
    symbols: Sequence[str] | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a lake's signals and outcomes (outcomes of any time after `start`)."""
    sig = read_columns(lake, "signals", SIGNAL_COLS, settings, start, end).to_pandas()
    out = read_columns(lake, "outcomes", OUTCOME_COLS, settings, start, None).to_pandas()
    sig = sig.drop_duplicates("event_id", keep="last")
    out = out[list(OUTCOME_COLS)].drop_duplicates("signal_id", keep="last")
    if symbols:
        sig = sig[sig["symbol"].isin(list(symbols))]
    return sig.reset_index(drop=True), out.reset_index(drop=True)


def read_columns(
    lake: str,
    topic: str,
    columns: Sequence[str],
    settings: Settings,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> pa.Table:
    """Read some columns of a topic's lake files (as `infra.lake.read_topic`, minus the rest).

    Rows keep the lake order (partition, offset); `start <= event_timestamp < end`.
    The wide columns (`payload` above all) are never read.
    """
    from infra.lake import list_files, read_files, schema_for
    from infra.objectstore import store_for_uri

    store = store_for_uri(lake, settings)
    files = list_files(store, topic, start, end)
    wanted = list(dict.fromkeys([*columns, "kafka_partition", "kafka_offset", "event_timestamp"]))
    missing = [c for c in wanted if c not in schema_for(topic).names]
    if missing:
        raise DataError(f"lake {lake}: {topic} has no columns {missing}")
    if not files:
        return schema_for(topic).empty_table().select(wanted)
    table = read_files(store, files, wanted, start=start, end=end)
    return table.sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")])
