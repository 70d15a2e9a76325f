"""The point-in-time training dataset out of core: DuckDB over the lake's parquet files.

The same rows, values and order as the in-memory path (`training.datasets`:
`load_lake`, `assemble`, `_finish`), computed by one DuckDB connection that reads
the lake's files itself, spills to disk past `TRAIN_DUCKDB_MEMORY_MB`, and hands
the two finished frames over as Arrow record batches:

- signals: the window's rows, deduplicated by `event_id` (last write in
  partition/offset order wins), joined to their outcome by `signal_id`;
- stream features: per strategy an `ASOF LEFT JOIN` on (symbol, stamp <= the
  signal's time) over the `strategy_stats` rows, one row per (symbol, strategy,
  stamp): the last in stream order, the value the trader had;
- decision points, meta labels and the exec columns as `_finish` derives them.

An S3 lake's files are copied to a local spool directory first (DuckDB's own S3
reader is an extension it would download).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from features.vectors import META_FEATURE_NAMES
from infra.contracts import FEATURE_NAMES, STRATEGIES
from training.config import DataError, TrainConfig
from training.frames import OUTCOME_COLS, OWN_STREAM, SIGNAL_COLS, LakeFrames, TrainingData
from training.pit_lake import LakeFiles, count_signals, lake_rows, literal, quote, run_sql, scalar

if TYPE_CHECKING:
    from collections.abc import Iterator

    import duckdb

    from infra.settings import Settings
__all__ = ["DuckDBOptions", "build_with_duckdb"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DuckDBOptions:
    """How much memory DuckDB may hold before it spills, and where to."""

    memory_mb: int = 2048
    threads: int = 2
    batch_rows: int = 262_144
    temp_dir: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> DuckDBOptions:
        """Return the options of `TRAIN_DUCKDB_MEMORY_MB`, spilling under the home."""
        spill = settings.home / "training" / "spill"
        return cls(memory_mb=settings.train_duckdb_memory_mb, temp_dir=str(spill))


def _check(con: duckdb.DuckDBPyConnection) -> None:
    """Raise DataError on NaN market features or R-multiples (as `_finish` does)."""
    nan = ", ".join(
        f"sum(CASE WHEN {quote(n)} IS NULL OR isnan({quote(n)}) THEN 1 ELSE 0 END)"
        for n in FEATURE_NAMES
    )
    row = run_sql(con, f"SELECT {nan} FROM j").fetchone() or ()
    bad = {n: int(v) for n, v in zip(FEATURE_NAMES, row, strict=True) if v}
    if bad:
        raise DataError(f"NaN market features in {sum(bad.values())} values: {bad}")
    if scalar(
        con,
        "SELECT count(*) FROM j WHERE r_multiple IS NULL OR isnan(r_multiple) OR isinf(r_multiple)",
    ):
        raise DataError("outcomes carry NaN or infinite R-multiples")


_ROW_ORDER = "__li, kafka_partition, kafka_offset, __fidx, __frow"


def _key(p: str) -> str:
    """Return the decision-point source key `_finish` factorizes (source|run|symbol)."""
    return (
        f"{p}source_kind || '|' || coalesce({p}run_id, 'None') || '|' || "
        f"coalesce({p}symbol, 'None')"
    )


def _finish_sql(con: duckdb.DuckDBPyConnection) -> None:
    """Create `final` (signals with their group) and `best` (one row per group)."""
    key = _key("")
    order = "{'l': __li, 'p': kafka_partition, 'o': kafka_offset, 'f': __fidx, 'r': __frow}"
    # decision-point sources numbered by first appearance, as pandas.factorize does
    run_sql(
        con,
        f"""CREATE TEMP TABLE src AS
        SELECT __key, dense_rank() OVER (ORDER BY __first) AS __src FROM (
            SELECT {key} AS __key, min({order}) AS __first FROM j GROUP BY ALL)""",
    )
    rank = " ".join(f"WHEN {literal(s)} THEN {i}" for i, s in enumerate(STRATEGIES))
    # one narrow row per signal: its decision point (group) and what picks the best candidate
    run_sql(
        con,
        f"""CREATE TEMP TABLE k AS
        SELECT __li, __fidx, __frow, kafka_partition, kafka_offset, r_multiple, exit_ts, __rank,
            dense_rank() OVER (ORDER BY event_timestamp, __src) - 1 AS "group"
        FROM (
            SELECT j.__li, j.__fidx, j.__frow, j.kafka_partition, j.kafka_offset, j.r_multiple,
                j.exit_ts, j.event_timestamp, src.__src, CASE j.strategy {rank} END AS __rank
            FROM j JOIN src ON {_key("j.")} = src.__key
        )""",
    )
    run_sql(
        con,
        f"""CREATE TEMP TABLE best AS
        SELECT __li, __fidx, __frow, "group", __exit_max FROM (
            SELECT __li, __fidx, __frow, "group",
                max(exit_ts) OVER (PARTITION BY "group") AS __exit_max,
                row_number() OVER (PARTITION BY "group"
                    ORDER BY r_multiple DESC, __rank, {_ROW_ORDER}) AS __n
            FROM k
        ) WHERE __n = 1""",
    )
    is_cols = ", ".join(
        f"CASE WHEN k.__rank = {i} THEN 1.0 ELSE 0.0 END::DOUBLE AS {quote(f'is_{s}')}"
        for i, s in enumerate(STRATEGIES)
    )
    picks = []
    for n in OWN_STREAM:
        cases = " ".join(f"WHEN {literal(s)} THEN w.{quote(f'{s}_{n}')}" for s in STRATEGIES)
        picks.append(f"CASE j.strategy {cases} END AS {quote(n)}")
    run_sql(
        con,
        f"""CREATE TEMP VIEW final AS
        SELECT j.*, w.* EXCLUDE (__li, symbol, event_timestamp), {", ".join(picks)},
            CASE WHEN j.side = 'long' THEN 1.0 ELSE -1.0 END::DOUBLE AS __side,
            CASE WHEN j.atr_14 > 0 THEN abs(j.entry - j.stop) / j.atr_14 ELSE 0.0 END::DOUBLE
                AS stop_atr,
            CASE WHEN abs(j.entry - j.stop) > 0
                THEN abs(j.target - j.entry) / abs(j.entry - j.stop) ELSE 0.0 END::DOUBLE
                AS reward_risk,
            {is_cols}, k."group"
        FROM j
        JOIN k ON j.__li = k.__li AND j.__fidx = k.__fidx AND j.__frow = k.__frow
        JOIN pts w ON j.__li = w.__li AND j.symbol = w.symbol
            AND j.event_timestamp = w.event_timestamp""",
    )


def _export(con: duckdb.DuckDBPyConnection, sql: str, path: Path) -> None:
    """Write a query's rows, in order, to a parquet file (DuckDB streams and spills)."""
    run_sql(con, f"COPY ({sql}) TO {literal(str(path))} (FORMAT parquet, COMPRESSION uncompressed)")


def _read_frame(path: Path, batch_rows: int) -> pd.DataFrame:
    """Read a parquet file into one pandas frame, one column at a time.

    Each column is filled batch by batch into one array allocated up front, so at
    most one column's batch is held beside the frame: no piece list, no concat.
    """
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    schema = source.schema_arrow
    n = source.metadata.num_rows
    frame = pd.DataFrame(index=pd.RangeIndex(n))
    try:
        for name in schema.names:
            frame[name] = _read_column(source, name, schema.field(name).type, n, batch_rows)
    finally:
        source.close()
        pa.default_memory_pool().release_unused()
    return frame


def _read_column(
    source: Any, name: str, kind: pa.DataType, n: int, batch_rows: int
) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """Return one column of a parquet file as the array `pd.concat` of its batches gives."""
    if pa.types.is_timestamp(kind) and kind.tz is not None:
        ticks = np.empty(n, dtype=np.int64)
        at = 0
        for batch in source.iter_batches(batch_size=batch_rows, columns=[name]):
            col = batch.column(0)
            if col.null_count:
                break  # NaT: the general path below
            ticks[at : at + len(col)] = col.cast(pa.int64()).to_numpy()
            at += len(col)
        else:
            naive = pd.DatetimeIndex(ticks.view(f"datetime64[{kind.unit}]"))
            del ticks
            return naive.tz_localize("UTC").array  # the lake's zone name becomes UTC
        del ticks
    out: np.ndarray | None = None
    at = 0
    for batch in source.iter_batches(batch_size=batch_rows, columns=[name]):
        piece = batch.column(0).to_pandas()
        if isinstance(piece.dtype, pd.DatetimeTZDtype):
            piece = piece.dt.tz_convert("UTC").dt.tz_localize(None)
        values = piece.to_numpy()
        if out is None:
            out = np.empty(n, dtype=values.dtype)
        elif values.dtype != out.dtype:  # e.g. nulls in a later batch: widen as concat does
            wide = np.result_type(out.dtype, values.dtype) if values.dtype != object else object
            out = out.astype(wide)
        out[at : at + len(values)] = values
        at += len(values)
    if out is None:
        empty = pa.array([], kind).to_pandas()
        if isinstance(empty.dtype, pd.DatetimeTZDtype):
            return empty.dt.tz_convert("UTC").array
        return empty.to_numpy()
    if pa.types.is_timestamp(kind) and kind.tz is not None:
        return pd.DatetimeIndex(out).tz_localize("UTC").array
    return out


@contextmanager
def _connect(opts: DuckDBOptions) -> Iterator[tuple[duckdb.DuckDBPyConnection, Path]]:
    import duckdb

    if opts.temp_dir:
        Path(opts.temp_dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tradeloop-pit-", dir=opts.temp_dir))
    con = duckdb.connect(
        config={
            "memory_limit": f"{int(opts.memory_mb)}MB",
            "threads": int(opts.threads),
            "temp_directory": str(work / "spill"),
            "preserve_insertion_order": False,
        }
    )
    try:
        yield con, work
    finally:
        con.close()  # idempotent: the build closes it before reading the frames back
        shutil.rmtree(work, ignore_errors=True)


def build_with_duckdb(
    lakes: Sequence[tuple[str, LakeFrames]],
    cfg: TrainConfig,
    opts: DuckDBOptions | None = None,
) -> TrainingData:
    """Build `TrainingData` with DuckDB: the same frames as the in-memory path, out of core.

    Raise `DataError` on an empty window, NaN market features or R-multiples, and
    unknown strategies, with the in-memory path's messages.
    """
    opts = opts or DuckDBOptions()
    counts: dict[str, int] = {}
    with _connect(opts) as (con, work):
        parts = []
        for li, (source, frames) in enumerate(lakes):
            weight = cfg.weights.get(source, 0.0)
            lake = LakeFiles(frames, work / f"spool{li}")
            if weight <= 0:
                counts[f"{frames.name}_skipped_weight0"] = count_signals(con, li, lake)
                continue
            n_sig, n_rows = lake_rows(con, li, lake, source, weight)
            counts[f"{frames.name}_signals"] = n_sig
            if n_sig:
                counts[f"{frames.name}_without_outcome"] = n_sig - n_rows
            if n_rows:
                parts.append(f"SELECT * FROM j_{li}")
        if not parts:
            names = ", ".join(f"{s}={f.lake}" for s, f in lakes) or "none"
            raise DataError(
                f"empty training window: no signal with an outcome in any source ({names})"
            )
        run_sql(con, f"CREATE TEMP VIEW j AS {' UNION ALL BY NAME '.join(parts)}")
        pts = " UNION ALL BY NAME ".join(p.replace("j_", "pts_") for p in parts)
        run_sql(con, f"CREATE TEMP VIEW pts AS {pts}")
        _check(con)
        _finish_sql(con)
        lo = _window_start(con, cfg.max_points, counts)
        run_sql(con, "SET preserve_insertion_order = true")  # COPY keeps the ORDER BY
        meta = ", ".join(
            f"{'f' if c in FEATURE_NAMES else 'w'}.{quote(c)}" for c in META_FEATURE_NAMES
        )
        _export(
            con,
            f"""SELECT b."group", f.event_timestamp, f.symbol, f.source_kind, f.weight, {meta},
                f.strategy AS label, f.r_multiple AS best_r, b.__exit_max AS exit_ts
            FROM best b JOIN j f USING (__li, __fidx, __frow)
            JOIN pts w ON f.__li = w.__li AND f.symbol = w.symbol
                AND f.event_timestamp = w.event_timestamp
            WHERE b."group" >= {lo}
            ORDER BY b."group" """,
            work / "groups.parquet",
        )
        run_sql(con, "DROP TABLE best")
        signal_cols = [
            *_signal_head(),
            *(quote(n) for n in OWN_STREAM),
            "source_kind",
            "weight",
            '__side AS "side"',
            "stop_atr",
            "reward_risk",
            *(quote(f"is_{s}") for s in STRATEGIES),
            '"group"',
        ]
        _export(
            con,
            f"""SELECT {", ".join(signal_cols)} FROM final WHERE "group" >= {lo}
            ORDER BY "group", {_ROW_ORDER}""",
            work / "signals.parquet",
        )
        con.close()  # DuckDB's memory goes before the frames come in
        log.debug("hand-over: reading the frames")
        groups = _read_frame(work / "groups.parquet", opts.batch_rows)
        signals = _read_frame(work / "signals.parquet", opts.batch_rows)
    groups["exit_ts"] = groups["exit_ts"].astype("datetime64[ns, UTC]")
    data = TrainingData(signals=signals, groups=groups)
    data.counts = counts
    return data


def _window_start(
    con: duckdb.DuckDBPyConnection, max_points: int | None, counts: dict[str, int]
) -> int:
    """Return the first decision point the frames keep (the most recent `max_points`).

    Count what the window leaves out in `counts` (`points_before_window`,
    `signals_before_window`), as `training.frames.keep_recent` does.
    """
    total = int(scalar(con, "SELECT count(*) FROM best"))
    if max_points is None or total <= max_points:
        return 0
    lo = total - max_points
    counts["points_before_window"] = lo
    counts["signals_before_window"] = int(
        scalar(con, f'SELECT count(*) FROM k WHERE "group" < {lo}')
    )
    return lo


def _signal_head() -> list[str]:
    """Return the signal columns before the stream features, in the in-memory order (SQL)."""
    head = [("side AS side_name" if c == "side" else quote(c)) for c in SIGNAL_COLS]
    outcome = [quote(c) for c in OUTCOME_COLS if c not in ("signal_id", "event_timestamp")]
    return [*head, "kafka_partition", "kafka_offset", *outcome, "outcome_ts"]
