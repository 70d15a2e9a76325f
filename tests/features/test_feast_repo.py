"""The Feast repo: apply (SDK and `feast` CLI), push + online reads on Redis,
point-in-time-correct history from the lake (local and S3), materialize and serve."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.store import ONLINE_FEATURES, TradeloopFeatureStore, redis_connection_string
from features.stream import StreamFeatureState
from infra.contracts import Event, FeatureUpdate, encode, topic_for
from infra.lake import write_batch
from infra.objectstore import store_for_uri
from infra.settings import Settings
from infra.stack import free_port
from tests import ROOT
from tests.helpers import settings_env
from tests.kit.synth import synthetic_events

FEAST = str(ROOT / ".venv" / "bin" / "feast")
VIEWS = {"signal_snapshots", "signal_stats", "strategy_stats", "symbol_stats", "trade_outcomes"}


def fill_lake(
    settings: Settings, n: int = 1500
) -> tuple[list[Event], list[FeatureUpdate], StreamFeatureState]:
    """Write synthetic events and their feature updates to the lake; return them."""
    events = list(synthetic_events(n))
    state = StreamFeatureState()
    updates = [o for o in state.learn_many(events) if isinstance(o, FeatureUpdate)]  # type: ignore[arg-type]
    store = store_for_uri(settings.lake, settings)
    for topic, items in (
        ("bars", [e for e in events if topic_for(e) == "bars"]),
        ("signals", [e for e in events if topic_for(e) == "signals"]),
        ("outcomes", [e for e in events if topic_for(e) == "outcomes"]),
        ("features", updates),
    ):
        rows = [
            {**e.to_dict(), "kafka_partition": 0, "kafka_offset": i, "payload": encode(e)}
            for i, e in enumerate(items)
        ]
        write_batch(store, topic, 0, rows)
    return events, updates, state


def expected_at(
    updates: list[FeatureUpdate], view: str, symbol: str, strategy: str, ts: dt.datetime
) -> dict[str, float] | None:
    """Brute-force point-in-time value: the last update of a view at or before ts."""
    best = None
    for u in updates:
        if u.feature_view != view or u.symbol != symbol or u.ts_event > ts:
            continue
        if view != "symbol_stats" and u.strategy != strategy:
            continue
        best = u.values
    return best


def feast_cli(repo: Path, settings: Settings, *args: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        [FEAST, "-c", str(repo), *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def feast_cli_here(repo: Path, settings: Settings, *args: str) -> str:
    """Run Feast's own CLI in this process (Feast is imported already: no second start-up)."""
    from click.testing import CliRunner
    from feast.cli.cli import cli

    result = CliRunner().invoke(cli, ["-c", str(repo), *args], env=settings_env(settings))
    assert result.exit_code == 0, f"{result.output}{result.exception!r}"
    return result.output


def test_redis_connection_string() -> None:
    timeouts = "socket_timeout=2.0,socket_connect_timeout=2.0"
    assert redis_connection_string("redis://127.0.0.1:6379/2") == f"127.0.0.1:6379,db=2,{timeouts}"
    assert redis_connection_string("redis://:pw@h:1") == f"h:1,db=0,password=pw,{timeouts}"
    assert redis_connection_string("redis://h:1", 500).endswith(
        "socket_timeout=0.5,socket_connect_timeout=0.5"
    )
    with pytest.raises(ValueError):
        redis_connection_string("http://x")


def test_repo_apply_push_online_history_and_feast_cli(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    settings = make_settings(kafka=False, redis=True, FEAST_REPO_DIR=str(repo))
    events, updates, state = fill_lake(settings)
    fs = TradeloopFeatureStore(settings)
    assert set(fs.apply()) == VIEWS
    assert (repo / "feature_store.yaml").exists()

    # the `feast` executable works in the rendered repo as it is (`apply` here, `serve`
    # booting meanwhile; `feature-views list` and `materialize` run its CLI in this process)
    feast_cli(repo, settings, "apply")
    port = free_port()
    server = subprocess.Popen(
        [
            FEAST,
            "-c",
            str(repo),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        env=settings_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        check_cli_and_serve(repo, settings, fs, state, events, updates, port, server)
    finally:
        os.killpg(server.pid, 15)
        server.wait(20)


def check_cli_and_serve(
    repo: Path,
    settings: Settings,
    fs: TradeloopFeatureStore,
    state: StreamFeatureState,
    events: list[Event],
    updates: list[FeatureUpdate],
    port: int,
    server: subprocess.Popen[bytes],
) -> None:
    listed = feast_cli_here(repo, settings, "feature-views", "list")
    assert {w for line in listed.splitlines() for w in line.split()} >= VIEWS

    # online push and read (Redis), with event timestamps
    fs.push_updates(state.entity_rows())
    got = fs.online("ES", "S2")
    want = {**state.strategy_values("ES")["S2"], **state.symbol_values("ES")}
    assert {k: v for k, (v, _) in got.items()} == pytest.approx(want)
    last_es_s2 = max(
        u.ts_event
        for u in updates
        if u.symbol == "ES" and u.strategy == "S2" and u.feature_view == "strategy_stats"
    )
    assert got["win_rate"][1] == last_es_s2

    # point-in-time-correct history for the signals (never a value from the future)
    sigs = [e for e in events if topic_for(e) == "signals"][::7]
    entity_df = pd.DataFrame(
        {
            "symbol": [s.symbol for s in sigs],  # type: ignore[attr-defined]
            "strategy": [s.strategy for s in sigs],  # type: ignore[attr-defined]
            "event_timestamp": [s.ts_event - dt.timedelta(seconds=1) for s in sigs],
        }
    )
    frame = fs.historical(entity_df)
    assert len(frame) == len(entity_df)
    for row in frame.itertuples(index=False):
        ts = row.event_timestamp.to_pydatetime()
        for ref in ONLINE_FEATURES:
            view, _, name = ref.partition(":")
            exp = expected_at(updates, view, row.symbol, row.strategy, ts)
            value = getattr(row, name)
            if exp is None:
                assert pd.isna(value), (ref, row)
            else:
                assert value == pytest.approx(exp[name]), (ref, row)

    # materialize the batch views, then read everything back through the HTTP server
    end = (max(e.ts_event for e in events) + dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    feast_cli_here(
        repo,
        settings,
        "materialize",
        "2024-01-01T00:00:00",
        end,
        "--views",
        "signal_snapshots",
        "--views",
        "trade_outcomes",
    )
    body = json.dumps(
        {
            "features": [
                "strategy_stats:win_rate",
                "signal_snapshots:rsi_14",
                "trade_outcomes:r_multiple",
            ],
            "entities": {"symbol": ["ES"], "strategy": ["S2"]},
        }
    ).encode()
    deadline = time.monotonic() + 90
    reply: dict[str, Any] | None = None
    while time.monotonic() < deadline and reply is None:
        assert server.poll() is None, "feast serve exited"
        try:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/get-online-features",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                reply = json.loads(resp.read())
        except OSError:
            time.sleep(0.5)
    assert reply is not None, "feast serve did not answer"
    names = reply["metadata"]["feature_names"]
    values = {n: r["values"][0] for n, r in zip(names, reply["results"], strict=True)}
    assert values["win_rate"] == pytest.approx(state.strategy_values("ES")["S2"]["win_rate"])
    signal_events = [e for e in events if topic_for(e) == "signals"]
    last_sig = [e for e in signal_events if (e.symbol, e.strategy) == ("ES", "S2")][-1]  # type: ignore[attr-defined]
    assert values["rsi_14"] == pytest.approx(last_sig.feature_dict()["rsi_14"])  # type: ignore[attr-defined]
    assert values["r_multiple"] is not None


def test_history_reads_a_lake_on_s3(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(kafka=False, s3=True, FEAST_REPO_DIR=str(tmp_path / "repo"))
    events, updates, _ = fill_lake(settings, n=600)
    fs = TradeloopFeatureStore(settings)
    fs.apply()
    assert fs.config()["offline_store"]["s3_endpoint_override"] == settings.s3_endpoint
    outs = [e for e in events if topic_for(e) == "outcomes"][-5:]
    entity_df = pd.DataFrame(
        {
            "symbol": [o.symbol for o in outs],  # type: ignore[attr-defined]
            "strategy": [o.strategy for o in outs],  # type: ignore[attr-defined]
            "event_timestamp": [o.ts_event for o in outs],
        }
    )
    frame = fs.historical(entity_df, ["strategy_stats:trade_count", "trade_outcomes:r_multiple"])
    for row, o in zip(frame.itertuples(index=False), outs, strict=True):
        exp = expected_at(updates, "strategy_stats", o.symbol, o.strategy, o.ts_event)  # type: ignore[attr-defined]
        assert exp is not None and row.trade_count == exp["trade_count"]
        assert row.r_multiple == pytest.approx(o.r_multiple)  # type: ignore[attr-defined]


def test_features_cli_apply_get_and_history_on_sqlite(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from features.cli import features
    from infra.settings import get_settings

    settings = make_settings(
        kafka=False, FEAST_REPO_DIR=str(tmp_path / "repo")
    )  # no REDIS_URL: SQLite
    events, updates, state = fill_lake(settings, n=800)
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("REDIS_URL", raising=False)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        applied = runner.invoke(features, ["apply"], catch_exceptions=False)
        assert applied.exit_code == 0 and "strategy_stats" in applied.output
        assert TradeloopFeatureStore(settings).config()["online_store"]["type"] == "sqlite"
        TradeloopFeatureStore(settings).push_updates(state.entity_rows())
        got = runner.invoke(
            features,
            ["get", "--symbol", "NQ", "--strategy", "S3", "--json"],
            catch_exceptions=False,
        )
        assert got.exit_code == 0, got.output
        values = json.loads(got.output)
        assert values["trade_count"]["value"] == state.strategy_values("NQ")["S3"]["trade_count"]
        assert values["realized_vol"]["value"] == pytest.approx(
            state.symbol_values("NQ")["realized_vol"]
        )
        assert values["trade_count"]["event_timestamp"].startswith("2024-")

        out = tmp_path / "history.parquet"
        hist = runner.invoke(features, ["history", "--out", str(out)], catch_exceptions=False)
        assert hist.exit_code == 0, hist.output
        frame = pd.read_parquet(out)
        signals = [e for e in events if topic_for(e) == "signals"]
        assert len(frame) == len(signals)
        row = frame.iloc[-1]
        exp = expected_at(
            updates,
            "strategy_stats",
            row["symbol"],
            row["strategy"],
            row["event_timestamp"].to_pydatetime(),
        )
        assert exp is not None and row["win_rate"] == pytest.approx(exp["win_rate"])
    finally:
        get_settings.cache_clear()
