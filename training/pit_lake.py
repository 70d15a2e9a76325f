"""One lake's rows for the DuckDB dataset build (`training.pit_duckdb`).

Its files as views ordered as the lake reads them, its signals in the window
deduplicated by `event_id` and joined to their outcome, and each decision point's
stream features as of its time (one `ASOF LEFT JOIN` per strategy); the SQL
quoting and statement helpers the build shares.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from infra.contracts import STRATEGIES
from training.config import DataError
from training.frames import OUTCOME_COLS, OWN_STREAM, SIGNAL_COLS, STREAM_VIEW, LakeFrames

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "LakeFiles",
    "count_signals",
    "lake_rows",
    "literal",
    "quote",
    "run_sql",
    "scalar",
    "zero_nan",
]

log = logging.getLogger(__name__)


def quote(name: str) -> str:
    """Return `name` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """Return `value` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _ts(value: dt.datetime) -> str:
    return f"TIMESTAMPTZ {literal(value.astimezone(dt.UTC).isoformat())}"


def zero_nan(expr: str) -> str:
    """Return `expr` with NULL and NaN as 0.0 (pandas' `fillna(0.0)`)."""
    return f"(CASE WHEN {expr} IS NULL OR isnan({expr}) THEN 0.0 ELSE {expr} END)::DOUBLE"


class LakeFiles:
    """One lake's files for DuckDB: local paths, or a local copy of an S3 lake's files."""

    def __init__(self, frames: LakeFrames, spool: Path) -> None:
        from infra.objectstore import store_for_uri

        self.frames = frames
        self.store = store_for_uri(frames.lake, frames.settings)
        self.spool = spool

    def files(self, topic: str, start: dt.datetime | None, end: dt.datetime | None) -> list[str]:
        """Return the topic's files that may hold [start, end), in the lake's read order."""
        from infra.lake import list_files
        from infra.objectstore import LocalObjectStore

        out = []
        for info in list_files(self.store, topic, start, end):
            key = str(info["key"])
            if isinstance(self.store, LocalObjectStore):
                out.append(str(self.store.root / key))
                continue
            path = self.spool / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.store.get(key))
            out.append(str(path))
        return out


def _scan(
    con: duckdb.DuckDBPyConnection,
    name: str,
    topic: str,
    files: list[str],
    columns: Sequence[str],
) -> str:
    """Register a view `name` over the files with (kafka_partition, offset, file, row) order keys."""
    from infra.lake import schema_for

    cols = list(dict.fromkeys([*columns, "kafka_partition", "kafka_offset", "event_timestamp"]))
    if not files:
        empty = schema_for(topic).empty_table().select(cols)
        con.register(f"{name}_empty", empty)
        run_sql(
            con,
            f"CREATE TEMP VIEW {name} AS SELECT *, 0 AS __fidx, 0::BIGINT AS __frow "
            f"FROM {name}_empty",
        )
        return name
    index = pa.table({"__file": files, "__fidx": list(range(len(files)))})
    con.register(f"{name}_files", index)
    listing = "[" + ", ".join(literal(f) for f in files) + "]"
    select = ", ".join(f"s.{quote(c)}" for c in cols)
    run_sql(
        con,
        f"CREATE TEMP VIEW {name} AS SELECT {select}, f.__fidx, s.file_row_number AS __frow "
        f"FROM read_parquet({listing}, filename = true, file_row_number = true, "
        f"union_by_name = true) s JOIN {name}_files f ON s.filename = f.__file",
    )
    return name


_ORDER = "kafka_partition, kafka_offset, __fidx, __frow"
_ORDER_STRUCT = "{'p': kafka_partition, 'o': kafka_offset, 'f': __fidx, 'r': __frow}"


def _window(column: str, start: dt.datetime | None, end: dt.datetime | None) -> str:
    conds = ["TRUE"]
    if start is not None:
        conds.append(f"{column} >= {_ts(start)}")
    if end is not None:
        conds.append(f"{column} < {_ts(end)}")
    return " AND ".join(conds)


def _dedupe(con: duckdb.DuckDBPyConnection, name: str, source: str, key: str) -> str:
    """Return a relation of `source` with one row per `key`: the last in lake order."""
    dupes = scalar(
        con, f"SELECT count(*) FROM (SELECT {key} FROM {source} GROUP BY {key} HAVING count(*) > 1)"
    )
    if not dupes:
        return source
    run_sql(
        con,
        f"""CREATE TEMP TABLE {name} AS SELECT * FROM {source}
        QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {_ORDER.replace(",", " DESC,")} DESC) = 1""",
    )
    return name


def lake_rows(
    con: duckdb.DuckDBPyConnection, li: int, lake: LakeFiles, source: str, weight: float
) -> tuple[int, int]:
    """Create tables `j_{li}` (labelled signals) and `pts_{li}` (stream features per point)."""
    fr = lake.frames
    ts_col = f"ts_{STREAM_VIEW}"
    sig = _scan(
        con, f"sig_raw_{li}", "signals", lake.files("signals", fr.start, fr.end), SIGNAL_COLS
    )
    out = _scan(
        con, f"out_raw_{li}", "outcomes", lake.files("outcomes", fr.start, None), OUTCOME_COLS
    )
    feat = _scan(
        con,
        f"feat_raw_{li}",
        "features",
        lake.files("features", None, None),
        ["symbol", "strategy", ts_col, *OWN_STREAM],
    )
    run_sql(
        con,
        f"CREATE TEMP TABLE sig_win_{li} AS SELECT * FROM {sig} "
        f"WHERE {_window('event_timestamp', fr.start, fr.end)}",
    )
    sig_one = _dedupe(con, f"sig_one_{li}", f"sig_win_{li}", "event_id")
    sym_filter = (
        f"symbol IN ({', '.join(literal(s) for s in fr.symbols)})" if fr.symbols else "TRUE"
    )
    run_sql(con, f"CREATE TEMP VIEW sig_{li} AS SELECT * FROM {sig_one} WHERE {sym_filter}")
    run_sql(
        con,
        f"CREATE TEMP TABLE out_win_{li} AS SELECT * FROM {out} "
        f"WHERE {_window('event_timestamp', fr.start, None)}",
    )
    out_one = _dedupe(con, f"out_one_{li}", f"out_win_{li}", "signal_id")
    n_sig = scalar(con, f"SELECT count(*) FROM sig_{li}")
    # one feature row per (symbol, strategy, stamp): the last in stream order
    values = "{" + ", ".join(f"{literal(n)}: {quote(n)}" for n in OWN_STREAM) + "}"
    run_sql(
        con,
        f"""CREATE TEMP TABLE feat_{li} AS
        SELECT symbol, strategy, __fts, v.* FROM (
            SELECT symbol, strategy, {quote(ts_col)} AS __fts,
                arg_max({values}, {_ORDER_STRUCT}) AS v
            FROM {feat} WHERE {quote(ts_col)} IS NOT NULL GROUP BY ALL
        )""",
    )
    sig_cols = ", ".join(f"s.{quote(c)}" for c in [*SIGNAL_COLS, "kafka_partition", "kafka_offset"])
    out_cols = ", ".join(
        f"o.{quote(c)}" for c in OUTCOME_COLS if c not in ("signal_id", "event_timestamp")
    )
    run_sql(
        con,
        f"""CREATE TEMP TABLE j_{li} AS
        SELECT {sig_cols}, {out_cols}, o.event_timestamp AS outcome_ts,
            {li} AS __li, s.__fidx, s.__frow,
            {literal(source)} AS source_kind, {float(weight)!r}::DOUBLE AS weight
        FROM sig_{li} s JOIN {out_one} o ON s.event_id = o.signal_id""",
    )
    for t in {f"sig_win_{li}", sig_one, f"out_win_{li}", out_one}:
        run_sql(con, f"DROP TABLE {t}")
    n_rows = scalar(con, f"SELECT count(*) FROM j_{li}")
    unknown = [
        r[0]
        for r in run_sql(
            con,
            f"SELECT DISTINCT strategy FROM j_{li} WHERE strategy IS NULL OR strategy NOT IN "
            f"({', '.join(literal(s) for s in STRATEGIES)}) ORDER BY 1",
        ).fetchall()
    ]
    if unknown:
        raise DataError(
            f"{fr.name}: signals of unknown strategies {unknown} (expected {list(STRATEGIES)})"
        )
    # every strategy's values as of each decision point, one as-of join per strategy
    wide_sel, joins = [], []
    for k, s in enumerate(STRATEGIES):
        joins.append(
            f"ASOF LEFT JOIN (SELECT * FROM feat_{li} WHERE strategy = {literal(s)}) f{k} "
            f"ON p.symbol = f{k}.symbol AND p.event_timestamp >= f{k}.__fts"
        )
        wide_sel += [f"{zero_nan(f'f{k}.{quote(n)}')} AS {quote(f'{s}_{n}')}" for n in OWN_STREAM]
    run_sql(
        con,
        f"""CREATE TEMP TABLE pts_{li} AS
        SELECT {li} AS __li, p.symbol, p.event_timestamp, {", ".join(wide_sel)}
        FROM (SELECT DISTINCT symbol, event_timestamp FROM j_{li}) p {" ".join(joins)}""",
    )
    run_sql(con, f"DROP TABLE feat_{li}")
    return n_sig, n_rows


def run_sql(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.DuckDBPyConnection:
    """Execute one statement; log its first words and duration at DEBUG."""
    t0 = time.perf_counter()
    out = con.execute(sql)
    log.debug("%.2fs %s", time.perf_counter() - t0, " ".join(sql.split())[:60])
    return out


def scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    """Return the first value of the statement's first row."""
    row = run_sql(con, sql).fetchone()
    assert row is not None
    return row[0]


def count_signals(con: duckdb.DuckDBPyConnection, li: int, lake: LakeFiles) -> int:
    """Return how many distinct signals the lake holds in its window (a lake not trained on)."""
    fr = lake.frames
    sig = _scan(
        con,
        f"sig_raw_{li}",
        "signals",
        lake.files("signals", fr.start, fr.end),
        ["event_id", "symbol"],
    )
    symbols = f"symbol IN ({', '.join(literal(s) for s in fr.symbols)})" if fr.symbols else "TRUE"
    return int(
        scalar(
            con,
            f"SELECT count(*) FROM (SELECT DISTINCT event_id FROM {sig} WHERE "
            f"{_window('event_timestamp', fr.start, fr.end)} AND {symbols})",
        )
    )
