"""A small wrapper around the Feast SDK for tradeloop's repo.

`TradeloopFeatureStore(settings)` renders `feature_store.yaml` from settings into the
repo directory (`FEAST_REPO_DIR`, else `features/repo/`), applies the definitions,
pushes stream features online, reads them back, and builds point-in-time-correct
training frames from the event lake.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import functools
import hashlib
import importlib.util
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import yaml

from infra.crash import CrashPoint, armed, crash_point
from infra.settings import Settings, get_settings
from infra.settings.base import mask_url

__all__ = ["PACKAGE_REPO", "STREAM_VIEW_FEATURES", "TradeloopFeatureStore", "project_name"]

PACKAGE_REPO = Path(__file__).resolve().parent / "repo"
REPO_FILES = ("definitions.py", ".feastignore")
STREAM_VIEW_FEATURES: dict[str, tuple[str, ...]] = {
    "strategy_stats": ("win_rate", "mean_r", "ewm_r", "drawdown_r", "trade_count"),
    "signal_stats": ("signal_rate",),
    "symbol_stats": ("realized_vol", "regime"),
}
ONLINE_FEATURES: tuple[str, ...] = tuple(
    f"{view}:{name}" for view, names in STREAM_VIEW_FEATURES.items() for name in names
)


@functools.lru_cache(maxsize=4096)
def _online_value(vector: bytes) -> tuple[float | None, dt.datetime | None]:
    """Return (value, event time in UTC) of a serialised one-row response vector.

    A pure function of the bytes, cached: between two pushes reads return the same.
    """
    from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse

    parsed = GetOnlineFeaturesResponse.FeatureVector.FromString(vector)
    value = parsed.values[0]
    kind = value.WhichOneof("val")
    ts = parsed.event_timestamps[0]
    return (
        float(getattr(value, kind)) if kind else None,
        ts.ToDatetime(tzinfo=dt.UTC) if ts.seconds or ts.nanos else None,
    )


def project_name(settings: Settings) -> str:
    """Return the Feast project: `tradeloop` plus the topic prefix (isolates test runs)."""
    prefix = re.sub(r"[^A-Za-z0-9_]", "_", settings.topic_prefix).strip("_")
    if not prefix or prefix == "tradeloop":
        return "tradeloop"
    return f"tradeloop_{prefix}"


def redis_connection_string(url: str, timeout_ms: int = 2000) -> str:
    """Turn `redis://[:password@]host:port/db` into Feast's `host:port,db=N[,password=...]`.

    Connects and commands time out after `timeout_ms`, so a silent Redis fails a push
    (which is retried) instead of holding it forever.
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise ValueError(f"REDIS_URL must start with redis:// or rediss://, got {mask_url(url)!r}")
    parts = [f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}"]
    db = (parsed.path or "/0").strip("/") or "0"
    parts.append(f"db={db}")
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    timeout_s = timeout_ms / 1000
    parts += [f"socket_timeout={timeout_s}", f"socket_connect_timeout={timeout_s}"]
    return ",".join(parts)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace a file in one step (processes rendering one repo at once never collide).

    The temporary file is created private and only then given `mode`, so a secret
    is never readable by others, not even for a moment.
    """
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write(data)
    tmp = Path(f.name)
    tmp.chmod(mode)
    tmp.replace(path)


class TradeloopFeatureStore:
    """The Feast repo of tradeloop, configured from settings."""

    def __init__(
        self, settings: Settings | None = None, repo_dir: str | Path | None = None
    ) -> None:
        self.settings = settings or get_settings()
        chosen = repo_dir or self.settings.feast_repo_dir
        self.repo_dir = Path(chosen).resolve() if chosen else PACKAGE_REPO
        self.project = project_name(self.settings)
        self._fs: Any = None
        self._views: dict[str, Any] = {}

    # Rendering and applying ------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """Return where the registry and the SQLite online store live."""
        if self.repo_dir == PACKAGE_REPO:
            return self.settings.home / "feast" / self.project
        return self.repo_dir / "data"

    def config(self) -> dict[str, Any]:
        """Return the `feature_store.yaml` content for these settings."""
        lake = self.settings.lake
        if not lake.startswith("s3://"):
            lake = str(Path(lake).resolve())
        offline: dict[str, Any] = {
            "type": "features.repo.lake_offline.LakeOfflineStore",
            "lake_uri": lake,
        }
        if lake.startswith("s3://") and self.settings.s3_endpoint:
            offline["s3_endpoint_override"] = self.settings.s3_endpoint
        if self.settings.redis_url:
            online: dict[str, Any] = {
                # Feast's Redis store with one-pipeline pushes and reads (same keys)
                "type": "features.repo.redis_online.TradeloopRedisOnlineStore",
                "connection_string": redis_connection_string(
                    self.settings.redis_url, self.settings.redis_timeout_ms
                ),
                # rows are pushed in processing order, latest per entity; equal event
                # times (two trades closing in one bar) must not be dropped
                "skip_dedup": True,
            }
        else:
            online = {"type": "sqlite", "path": str(self.state_dir / "online.db")}
        return {
            "project": self.project,
            "provider": "local",
            "registry": {"path": str(self.state_dir / "registry.db"), "cache_ttl_seconds": 60},
            "online_store": online,
            "offline_store": offline,
            "entity_key_serialization_version": 3,
        }

    def render(self) -> Path:
        """Write `feature_store.yaml` (and the definitions, for a repo outside the package)."""
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.repo_dir != PACKAGE_REPO:
            for name in REPO_FILES:
                _write_atomic(self.repo_dir / name, (PACKAGE_REPO / name).read_bytes())
        path = self.repo_dir / "feature_store.yaml"
        text = "# Rendered from settings by `tradeloop features apply`; edits are overwritten.\n"
        text += yaml.safe_dump(self.config(), sort_keys=False)
        _write_atomic(path, text.encode(), mode=0o600)  # holds the Redis password
        self._fs = None
        self._views = {}
        return path

    def definitions(self) -> ModuleType:
        """Import the repo's definitions module (from the rendered repo directory)."""
        path = self.repo_dir / "definitions.py"
        name = f"_tradeloop_feast_defs_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    def _digest(self) -> str:
        parts = [(self.repo_dir / n).read_bytes() for n in ("feature_store.yaml", *REPO_FILES)]
        return hashlib.sha256(b"\0".join(parts)).hexdigest()

    def apply(self, force: bool = True) -> list[str]:
        """Render the config and register every definition; return the view names.

        With `force=False`, skip the registration when this exact config and these
        definitions were applied already (a worker restart then takes no time).
        Processes of this host apply one at a time (a lock file beside the registry):
        Feast's file registry is rewritten in place, and workers started together
        read it while another writes it.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "apply.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.render()
            stamp = self.state_dir / "applied.sha256"
            digest = self._digest()
            registry = self.state_dir / "registry.db"
            if not force and registry.exists() and stamp.exists() and stamp.read_text() == digest:
                return sorted([*STREAM_VIEW_FEATURES, "signal_snapshots", "trade_outcomes"])
            objects = list(self.definitions().OBJECTS)
            self.store.apply(objects)
            self._views = {}
            stamp.write_text(digest)
            return sorted(o.name for o in objects if type(o).__name__ == "FeatureView")

    @property
    def store(self) -> Any:
        """Return the `feast.FeatureStore` of the repo (rendering the config if needed)."""
        if self._fs is None:
            from feast import FeatureStore

            import features.repo.lake_offline
            import features.repo.redis_online  # noqa: F401  (the online store class)

            if not (self.repo_dir / "feature_store.yaml").exists():
                self.render()
            self._fs = FeatureStore(repo_path=str(self.repo_dir))
        return self._fs

    # Online -------------------------------------------------------------------

    def push(self, view: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Push rows (`symbol`, [`strategy`], features, `event_timestamp`) online.

        Keeps the last row per entity; returns the number of rows written.
        """
        from feast.data_source import PushMode

        names = STREAM_VIEW_FEATURES.get(view)
        if names is None:
            raise KeyError(
                f"unknown stream feature view {view!r}; one of {sorted(STREAM_VIEW_FEATURES)}"
            )
        keys = ["symbol"] if view == "symbol_stats" else ["symbol", "strategy"]
        latest: dict[tuple[str, ...], Mapping[str, Any]] = {}
        for row in rows:
            latest[tuple(str(row[k]) for k in keys)] = row
        if not latest:
            return 0
        records = []
        for row in latest.values():
            values = row.get("values", row)
            rec: dict[str, Any] = {k: str(row[k]) for k in keys}
            for n in names:
                rec[n] = float(values.get(n, 0.0))
            ts = row.get("event_timestamp", row.get("ts_event"))
            rec[f"ts_{view}"] = pd.Timestamp(ts).tz_convert("UTC") if ts is not None else pd.NaT
            records.append(rec)
        frame = pd.DataFrame.from_records(records)
        self.store.push(f"{view}_push", frame, to=PushMode.ONLINE)
        return len(records)

    def push_updates(self, updates: Sequence[Any]) -> int:
        """Push `FeatureUpdate` events (any views) online; return rows written.

        On Redis all rows go out in one pipeline (`TradeloopRedisOnlineStore.write_rows`),
        the latest per entity and view; other online stores take Feast's `push`.
        """
        online = self._online_store()
        if online is not None:
            return self._write_updates(online, updates)
        by_view: dict[str, list[dict[str, Any]]] = {}
        for u in updates:
            by_view.setdefault(u.feature_view, []).append(
                {
                    "symbol": u.symbol,
                    "strategy": u.strategy,
                    "values": u.values,
                    "event_timestamp": u.ts_event,
                }
            )
        written = 0
        for i, (view, rows) in enumerate(by_view.items()):
            if i:
                crash_point(CrashPoint.AGENTS_MID_FEAST_PUSH)  # some views pushed, not all
            written += self.push(view, rows)
        return written

    def warm_online(self) -> None:
        """Prepare the first push: look the stream views up and connect to the online store."""
        for name in STREAM_VIEW_FEATURES:
            self._view(name)
        online = self._online_store()
        if online is not None:
            online.connect(self.store.config)

    def _online_store(self) -> Any:
        """Return the online store if it takes prepared rows (`write_rows`), else None."""
        from features.repo.redis_online import TradeloopRedisOnlineStore

        online = self.store._get_provider().online_store
        return online if isinstance(online, TradeloopRedisOnlineStore) else None

    def _view(self, name: str) -> Any:
        """Return a stream feature view from the registry (looked up once per apply)."""
        view = self._views.get(name)
        if view is None:
            if name not in STREAM_VIEW_FEATURES:
                raise KeyError(
                    f"unknown stream feature view {name!r}; one of {sorted(STREAM_VIEW_FEATURES)}"
                )
            view = self._views[name] = self.store.get_feature_view(name)
        return view

    def _write_updates(self, online: Any, updates: Sequence[Any]) -> int:
        latest: dict[tuple[str, str, str], Any] = {}
        for u in updates:
            latest[(u.feature_view, u.symbol, u.strategy)] = u
        rows = []
        for (view, symbol, strategy), u in latest.items():
            table = self._view(view)
            names = STREAM_VIEW_FEATURES[view]
            keys = (
                {"symbol": symbol}
                if view == "symbol_stats"
                else {"symbol": symbol, "strategy": strategy}
            )
            values = {n: float(u.values.get(n, 0.0)) for n in names}
            rows.append((table, keys, values, u.ts_event))
        if armed() and len(rows) > 1:  # a crash plan: stop with some rows written, not all
            half = len(rows) // 2
            written = int(online.write_rows(self.store.config, rows[:half]))
            crash_point(CrashPoint.AGENTS_MID_FEAST_PUSH)
            return written + int(online.write_rows(self.store.config, rows[half:]))
        return int(online.write_rows(self.store.config, rows))

    def online(
        self, symbol: str, strategy: str
    ) -> dict[str, tuple[float | None, dt.datetime | None]]:
        """Return {feature: (value, event time)} of every stream feature for an entity."""
        resp = self.store.get_online_features(
            features=list(ONLINE_FEATURES),
            entity_rows=[{"symbol": symbol, "strategy": strategy}],
            full_feature_names=False,
        )
        proto = resp.proto
        out: dict[str, tuple[float | None, dt.datetime | None]] = {}
        for name, vector in zip(proto.metadata.feature_names.val, proto.results, strict=True):
            if name in ("symbol", "strategy"):
                continue
            out[name] = _online_value(vector.SerializeToString())
        return out

    # Offline ------------------------------------------------------------------

    def historical(
        self, entity_df: pd.DataFrame, features: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Return a point-in-time-correct frame: entity_df joined with feature values.

        `entity_df` has `symbol`, `strategy` and `event_timestamp` (UTC); every feature
        value is the latest one known strictly at or before each row's timestamp.
        """
        missing = {"symbol", "strategy", "event_timestamp"} - set(entity_df.columns)
        if missing:
            raise ValueError(f"entity_df lacks columns {sorted(missing)}")
        frame = entity_df.copy().reset_index(drop=True)
        frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
        frame["__row"] = range(len(frame))
        refs = list(features) if features else list(ONLINE_FEATURES)
        by_view: dict[str, list[str]] = {}
        for ref in refs:
            view, _, name = ref.partition(":")
            if not name:
                raise ValueError(f"feature reference {ref!r} is not 'view:feature'")
            by_view.setdefault(view, []).append(ref)
        out = frame
        for view_refs in by_view.values():
            # one join per view: Feast's dask store drops an entity row for which one
            # view has only later rows, which would lose the other views' values
            job = self.store.get_historical_features(entity_df=frame, features=view_refs)
            got: pd.DataFrame = job.to_df()
            names = [r.partition(":")[2] for r in view_refs]
            out = out.merge(got[["__row", *names]], on="__row", how="left")
        return out.sort_values("__row").drop(columns="__row").reset_index(drop=True)

    def close(self) -> None:
        """Drop the SDK handle."""
        self._fs = None
