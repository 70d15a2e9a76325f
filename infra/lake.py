"""The event lake: typed parquet files of raw events, named by their Kafka offsets.

Layout (DESIGN.md): `{lake}/{topic}/date=YYYY-MM-DD/symbol=XX/part-{partition}-{first}-{last}.parquet`
where `first`/`last` are the smallest and largest Kafka offsets in the file. The
same offsets always give the same key, so a re-upload after a crash overwrites the
same object with the same rows.

Each file has common columns (`event_id`, `schema`, `event_timestamp` = ts_event,
`ts_init`, `date`, `symbol`, `kafka_partition`, `kafka_offset`, `payload`), then
flattened typed columns per topic so Feast file sources (and DuckDB, pandas, Spark)
read them directly. `payload` is the original JSON on the wire, so replay rebuilds
every event exactly. The module is dict-based (infra does not import streams):
rows are `event.to_dict()` plus `kafka_partition`, `kafka_offset` and, ideally, the
original bytes under `payload`.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from infra.contracts.topics import LAKE_TOPICS
from infra.contracts.vocab import FEATURE_NAMES, STRATEGIES, STREAM_FEATURE_COLUMNS, STREAM_VIEWS
from infra.objectstore import ObjectStore, store_for_uri
from infra.settings import Settings

__all__ = [
    "LAKE_TOPICS",
    "NO_SYMBOL",
    "STREAM_FEATURE_COLUMNS",
    "STREAM_VIEWS",
    "LakeFile",
    "LakeFileError",
    "SkippedFile",
    "iter_payloads",
    "lake_key",
    "list_files",
    "parse_key",
    "read_files",
    "read_parquet",
    "read_topic",
    "schema_for",
    "skipped_files",
    "to_table",
    "write_batch",
]

NO_SYMBOL = "_"

log = logging.getLogger(__name__)

TS = pa.timestamp("us", tz="UTC")
_KEY_RE = re.compile(
    r"^(?P<topic>.+)/date=(?P<date>\d{4}-\d{2}-\d{2})/symbol=(?P<symbol>[^/]+)/"
    r"part-(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)\.parquet$"
)

Getter = Callable[[Mapping[str, Any]], Any]


def _ts(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        ts = value
    elif isinstance(value, str):
        ts = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        raise TypeError(f"not a timestamp: {value!r}")
    if ts.tzinfo is None:
        raise ValueError(f"timestamp without timezone: {value!r}")
    return ts.astimezone(dt.UTC)


def _get(name: str) -> Getter:
    return lambda row: row.get(name)


def _decision(name: str) -> Getter:
    return lambda row: (row.get("decision") or {}).get(name)


def _prob(strategy: str) -> Getter:
    return lambda row: ((row.get("decision") or {}).get("probabilities") or {}).get(strategy)


def _json(name: str) -> Getter:
    return lambda row: orjson.dumps(row.get(name), option=orjson.OPT_SORT_KEYS).decode()


def _snapshot(name: str) -> Getter:
    def get(row: Mapping[str, Any]) -> float | None:
        names = row.get("feature_names") or ()
        values = row.get("features") or ()
        for n, v in zip(names, values, strict=False):
            if n == name:
                return float(v)
        return None

    return get


def _value(name: str) -> Getter:
    return lambda row: (row.get("values") or {}).get(name)


def _view_ts(view: str) -> Getter:
    return lambda row: _ts(row.get("ts_event")) if row.get("feature_view") == view else None


def _symbol(row: Mapping[str, Any]) -> str:
    return str(row.get("symbol") or NO_SYMBOL)


def _schema_ref(row: Mapping[str, Any]) -> str:
    s = row.get("schema") or {}
    return f"{s.get('name', '')}/{s.get('version', '')}"


def _payload(row: Mapping[str, Any]) -> str:
    raw = row.get("payload")
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw).decode()
    if isinstance(raw, str):
        return raw
    body = {k: v for k, v in row.items() if k not in ("kafka_partition", "kafka_offset", "payload")}
    return orjson.dumps(body).decode()


_COMMON: list[tuple[str, pa.DataType, Getter]] = [
    ("event_id", pa.string(), _get("event_id")),
    ("schema", pa.string(), _schema_ref),
    ("event_timestamp", TS, lambda r: _ts(r.get("ts_event"))),
    ("ts_init", TS, lambda r: _ts(r.get("ts_init"))),
    ("date", pa.string(), lambda r: _ts(r.get("ts_event")).date().isoformat()),  # type: ignore[union-attr]
    ("symbol", pa.string(), _symbol),
    ("kafka_partition", pa.int32(), _get("kafka_partition")),
    ("kafka_offset", pa.int64(), _get("kafka_offset")),
]
_F64, _STR, _BOOL, _I64 = pa.float64(), pa.string(), pa.bool_(), pa.int64()

_TOPIC_COLUMNS: dict[str, list[tuple[str, pa.DataType, Getter]]] = {
    "bars": [
        *((c, _F64, _get(c)) for c in ("open", "high", "low", "close", "volume")),
        ("interval_s", _I64, _get("interval_s")),
        ("source", _STR, _get("source")),
    ],
    "signals": [
        ("strategy", _STR, _get("strategy")),
        ("side", _STR, _get("side")),
        *((c, _F64, _get(c)) for c in ("entry", "stop", "target")),
        ("source", _STR, _get("source")),
        ("run_id", _STR, _get("run_id")),
        ("decision_path", _STR, _decision("path")),
        ("taken", _BOOL, _decision("taken")),
        ("decision_reason", _STR, _decision("reason")),
        ("chosen_strategy", _STR, _decision("chosen_strategy")),
        ("predicted_r", _F64, _decision("predicted_r")),
        ("size_multiplier", _F64, _decision("size_multiplier")),
        ("contracts", _I64, _decision("contracts")),
        ("variant", _STR, _decision("variant")),
        *((f"prob_{s}", _F64, _prob(s)) for s in STRATEGIES),
        ("candidates", _STR, _json("candidates")),
        ("model_versions", _STR, _json("model_versions")),
        *((n, _F64, _snapshot(n)) for n in FEATURE_NAMES),
    ],
    "outcomes": [
        ("signal_id", _STR, _get("signal_id")),
        ("strategy", _STR, _get("strategy")),
        ("side", _STR, _get("side")),
        ("entry_ts", TS, lambda r: _ts(r.get("entry_ts"))),
        ("entry_price", _F64, _get("entry_price")),
        ("exit_ts", TS, lambda r: _ts(r.get("exit_ts"))),
        ("exit_price", _F64, _get("exit_price")),
        ("quantity", _I64, _get("quantity")),
        *(
            (c, _F64, _get(c))
            for c in ("pnl_usd", "r_multiple", "mae_r", "mfe_r", "commission_usd")
        ),
        ("exit_reason", _STR, _get("exit_reason")),
        ("counterfactual", _BOOL, _get("counterfactual")),
        ("source", _STR, _get("source")),
        ("run_id", _STR, _get("run_id")),
        ("model_versions", _STR, _json("model_versions")),
    ],
    "orders": [
        ("kind", _STR, lambda r: (r.get("schema") or {}).get("name")),
        ("client_order_id", _STR, _get("client_order_id")),
        ("venue", _STR, _get("venue")),
        ("venue_order_id", _STR, _get("venue_order_id")),
        ("contract", _STR, _get("contract")),
        *(
            (c, _STR, _get(c))
            for c in ("role", "side", "order_type", "parent_id", "oco_group", "signal_id")
        ),
        ("strategy", _STR, _get("strategy")),
        ("quantity", _I64, _get("quantity")),
        ("cumulative_quantity", _I64, _get("cumulative_quantity")),
        ("leaves_quantity", _I64, _get("leaves_quantity")),
        *((c, _F64, _get(c)) for c in ("limit_price", "stop_price", "fill_price")),
        ("commission_usd", _F64, _get("commission_usd")),
        ("venue_fill_id", _STR, _get("venue_fill_id")),
        ("reason", _STR, _get("reason")),
        ("expected_quantity", _I64, _get("expected_quantity")),
        ("avg_price", _F64, _get("avg_price")),
        ("expected_avg_price", _F64, _get("expected_avg_price")),
        ("status", _STR, _get("status")),
        ("source", _STR, _get("source")),
        ("run_id", _STR, _get("run_id")),
    ],
    "features": [
        ("feature_view", _STR, _get("feature_view")),
        ("strategy", _STR, _get("strategy")),
        *((c, _F64, _value(c)) for c in STREAM_FEATURE_COLUMNS),
        *((f"ts_{v}", TS, _view_ts(v)) for v in STREAM_VIEWS),
    ],
    "drift": [
        ("strategy", _STR, _get("strategy")),
        ("metric", _STR, _get("metric")),
        ("detector", _STR, _get("detector")),
        ("value", _F64, _get("value")),
        ("detail", _STR, _get("detail")),
    ],
    "dlq": [
        ("source_topic", _STR, _get("source_topic")),
        ("source_partition", _I64, _get("partition")),
        ("source_offset", _I64, _get("offset")),
        ("error_type", _STR, _get("error_type")),
        ("reason", _STR, _get("reason")),
        ("consumer", _STR, _get("consumer")),
    ],
}


def _columns(topic: str) -> list[tuple[str, pa.DataType, Getter]]:
    return [*_COMMON, *_TOPIC_COLUMNS.get(topic, []), ("payload", pa.string(), _payload)]


def schema_for(topic: str) -> pa.Schema:
    """Return the parquet schema of a topic's lake files."""
    return pa.schema([(name, typ) for name, typ, _ in _columns(topic)])


def lake_key(
    topic: str,
    date: dt.date | str,
    symbol: str,
    partition: int,
    first_offset: int,
    last_offset: int,
) -> str:
    """Return `{topic}/date=YYYY-MM-DD/symbol=XX/part-{partition}-{first}-{last}.parquet`."""
    day = date if isinstance(date, str) else date.isoformat()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        raise ValueError(f"date must be YYYY-MM-DD, got {day!r}")
    if "/" in symbol or not symbol:
        raise ValueError(f"bad symbol for a lake path: {symbol!r}")
    if first_offset > last_offset or first_offset < 0:
        raise ValueError(f"bad offset range {first_offset}..{last_offset}")
    return (
        f"{topic}/date={day}/symbol={symbol}/part-{partition}-{first_offset}-{last_offset}.parquet"
    )


class LakeFile(dict[str, Any]):
    """A parsed lake key: topic, date, symbol, partition, first, last (and `key`)."""


def parse_key(key: str) -> LakeFile | None:
    """Parse a lake key; return None if it is not a lake data file."""
    m = _KEY_RE.match(key)
    if not m:
        return None
    return LakeFile(
        key=key,
        topic=m["topic"],
        date=m["date"],
        symbol=m["symbol"],
        partition=int(m["partition"]),
        first=int(m["first"]),
        last=int(m["last"]),
    )


def to_table(topic: str, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Return the typed table of rows (sorted by partition and offset)."""
    ordered = sorted(rows, key=lambda r: (r.get("kafka_partition", 0), r.get("kafka_offset", 0)))
    cols = _columns(topic)
    arrays = [pa.array([get(r) for r in ordered], type=typ) for _, typ, get in cols]
    return pa.Table.from_arrays(arrays, schema=schema_for(topic))


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=True)
    return buf.getvalue()


def group_rows(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """Group rows by (date, symbol) of their `ts_event`."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        ts = _ts(row.get("ts_event"))
        if ts is None:
            raise ValueError(f"row {row.get('event_id')!r} has no ts_event")
        groups[(ts.date().isoformat(), _symbol(row))].append(row)
    return groups


def write_batch(
    store: ObjectStore, topic: str, partition: int, rows: Iterable[Mapping[str, Any]]
) -> list[str]:
    """Write one partition's rows as parquet files grouped by date and symbol; return keys."""
    keys: list[str] = []
    for (day, symbol), group in sorted(group_rows(rows).items()):
        table = to_table(topic, group)
        offsets = table.column("kafka_offset")
        key = lake_key(
            topic,
            day,
            symbol,
            partition,
            int(pc.min(offsets).as_py()),
            int(pc.max(offsets).as_py()),
        )
        store.put(key, _parquet_bytes(table))
        keys.append(key)
    return keys


def _day(ts: dt.datetime | None) -> str | None:
    return ts.astimezone(dt.UTC).date().isoformat() if ts is not None else None


def list_files(
    store: ObjectStore,
    topic: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> list[LakeFile]:
    """Return a topic's data files whose date partition may hold [start, end)."""
    lo, hi = _day(start), _day(end)
    out = []
    for key in store.list(f"{topic}/"):
        info = parse_key(key)
        if info is None or info["topic"] != topic:
            continue
        if (lo and info["date"] < lo) or (hi and info["date"] > hi):
            continue
        out.append(info)
    return sorted(out, key=lambda f: (f["partition"], f["first"], f["date"], f["symbol"]))


def read_topic(
    lake_uri: str,
    topic: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    settings: Settings | None = None,
    *,
    store: ObjectStore | None = None,
) -> pa.Table:
    """Return a topic's rows with start <= event_timestamp < end, in event-time order."""
    store = store or store_for_uri(lake_uri, settings)
    files = list_files(store, topic, start, end)
    if not files:
        return schema_for(topic).empty_table()
    return read_files(store, files, start=start, end=end).sort_by(
        [
            ("event_timestamp", "ascending"),
            ("kafka_partition", "ascending"),
            ("kafka_offset", "ascending"),
        ]
    )


@dataclass(frozen=True)
class SkippedFile:
    """A lake file a reader could not parse and left out."""

    uri: str
    reason: str


_skipped: dict[str, SkippedFile] = {}
_skipped_lock = threading.Lock()


def skipped_files() -> list[SkippedFile]:
    """Return every unreadable lake file this process skipped so far (each once, oldest first)."""
    with _skipped_lock:
        return list(_skipped.values())


def _skip(uri: str, exc: BaseException) -> None:
    reason = f"{type(exc).__name__}: {str(exc)[:200]}"
    with _skipped_lock:
        _skipped.setdefault(uri, SkippedFile(uri, reason))
        count = len(_skipped)
    log.warning("lake: skipped the unreadable file %s (%s); %d skipped so far", uri, reason, count)


def read_parquet(store: ObjectStore, key: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Read one lake file; raise `LakeFileError` naming it when it is not valid parquet."""
    data = store.get(key)
    try:
        return pq.read_table(io.BytesIO(data), columns=columns)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise LakeFileError(store.uri(key), exc) from exc


class LakeFileError(ValueError):
    """Raise when a lake file is truncated, corrupt or not parquet at all."""

    def __init__(self, uri: str, cause: BaseException) -> None:
        super().__init__(f"{uri} is not a readable parquet file ({type(cause).__name__}: {cause})")
        self.uri = uri
        self.cause = cause


def read_files(
    store: ObjectStore,
    files: Iterable[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    topic: str | None = None,
) -> pa.Table:
    """Read lake files (in parallel) into one table; keep start <= event_timestamp < end.

    A file that is not valid parquet (truncated, corrupt) is skipped: logged with its
    URI, counted in `skipped_files()`; the rest is read.
    """

    def load(info: Mapping[str, Any]) -> pa.Table | None:
        try:
            return read_parquet(store, str(info["key"]), columns)
        except LakeFileError as exc:
            _skip(exc.uri, exc.cause)
            return None

    files = list(files)
    with ThreadPoolExecutor(max_workers=8) as pool:
        tables = [t for t in pool.map(load, files) if t is not None]
    if not tables:
        name = topic or (str(files[0]["topic"]) if files else "")
        empty = schema_for(name).empty_table()
        return empty.select(list(columns)) if columns else empty
    table = pa.concat_tables(tables, promote_options="default")
    ts = table.column("event_timestamp")
    mask = None
    if start is not None:
        mask = pc.greater_equal(ts, pa.scalar(start.astimezone(dt.UTC), TS))
    if end is not None:
        upper = pc.less(ts, pa.scalar(end.astimezone(dt.UTC), TS))
        mask = upper if mask is None else pc.and_(mask, upper)
    if mask is not None:
        table = table.filter(mask)
    return table


def iter_payloads(
    lake_uri: str,
    topic: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    settings: Settings | None = None,
    *,
    store: ObjectStore | None = None,
) -> Iterator[tuple[int, int, bytes]]:
    """Yield (partition, offset, original JSON bytes) in (partition, offset) order.

    Per-partition order is the order the worker saw, which is what stream features
    depend on; decode the bytes with `infra.contracts.decode`.
    """
    table = read_topic(lake_uri, topic, start, end, settings, store=store)
    table = table.sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")])
    parts = table.column("kafka_partition").to_pylist()
    offs = table.column("kafka_offset").to_pylist()
    payloads = table.column("payload").to_pylist()
    last: tuple[int, int] | None = None
    for p, o, body in zip(parts, offs, payloads, strict=True):
        if (p, o) == last:  # a file written twice under different names: keep one copy
            continue
        last = (p, o)
        yield int(p), int(o), body.encode()
