"""The monitor's pure aggregation, its trader probe and its view, without a broker."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rich.console import Console

from infra.contracts import encode
from infra.stack import free_port
from streams.monitor import fetch_trader
from streams.monitor_state import (
    MonitorState,
    compute_lag,
    day_start,
    lag_summary,
    parse_since,
    parse_trader_metrics,
    summarize_trader,
)
from streams.monitor_view import render
from tests.kit.events import dead_letter, drift, manifest, outcome

NOW = datetime(2024, 5, 1, 15, 30, tzinfo=UTC)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def test_parse_since_accepts_durations_and_iso_times() -> None:
    assert parse_since("15m", NOW) == NOW - timedelta(minutes=15)
    assert parse_since("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_since("1.5d", NOW) == NOW - timedelta(hours=36)
    assert parse_since("30s", NOW) == NOW - timedelta(seconds=30)
    assert parse_since("2024-05-01T13:00:00Z", NOW) == datetime(2024, 5, 1, 13, tzinfo=UTC)
    # a naive time is UTC; an offset is converted
    assert parse_since("2024-05-01T13:00:00", NOW) == datetime(2024, 5, 1, 13, tzinfo=UTC)
    assert parse_since("2024-05-01T09:00:00-04:00", NOW) == datetime(2024, 5, 1, 13, tzinfo=UTC)
    with pytest.raises(ValueError, match="--from 'yesterday'"):
        parse_since("yesterday", NOW)
    assert day_start(NOW) == datetime(2024, 5, 1, tzinfo=UTC)


def test_lag_per_partition_skips_uncommitted_and_unknown_partitions() -> None:
    committed = {
        "streams": {("t.bars", 0): 10, ("t.bars", 1): -1, ("t.outcomes", 0): 5},
        "trader": {("t.models", 0): 3, ("t.gone", 0): 1},
    }
    ends = {("t.bars", 0): 25, ("t.bars", 1): 4, ("t.outcomes", 0): 5, ("t.models", 0): 3}
    rows = compute_lag(committed, ends)
    assert [(r.group, r.topic, r.partition, r.lag) for r in rows] == [
        ("streams", "t.bars", 0, 15),
        ("streams", "t.outcomes", 0, 0),
        ("trader", "t.models", 0, 0),
    ]
    summary = lag_summary(rows, supported=True, notes=[])
    assert summary["total_by_group"] == {"streams": 15, "trader": 0}
    assert summary["partitions"][0] == {
        "group": "streams", "topic": "t.bars", "partition": 0, "committed": 10, "end": 25, "lag": 15,
    }  # fmt: skip


def test_pnl_counts_only_todays_real_trades_once() -> None:
    state = MonitorState(day=NOW.date())
    trades = [
        outcome(NOW, "ES", "S2", 250.0, 1.0),
        outcome(NOW, "ES", "S2", -125.0, -0.5),
        outcome(NOW, "ES", "S6", 0.0, 0.0),  # a scratch is not a win
        outcome(NOW, "NQ", "S3", 400.0, 2.0),
    ]
    for t in trades:
        state.observe("outcomes", encode(t), _ms(NOW))
    state.observe("outcomes", encode(trades[0]), _ms(NOW))  # redelivered: counted once
    state.observe(
        "outcomes", encode(outcome(NOW, "ES", "S2", 900.0, 3.0, counterfactual=True)), _ms(NOW)
    )
    yesterday = NOW - timedelta(days=1)
    state.observe(
        "outcomes", encode(outcome(NOW, "NQ", "S3", 50.0, 0.2, exit_ts=yesterday)), _ms(NOW)
    )
    pnl = state.pnl()
    assert pnl["day"] == "2024-05-01"
    rows = {(r["symbol"], r["strategy"]): r for r in pnl["by_symbol_strategy"]}
    assert rows[("ES", "S2")] == {
        "symbol": "ES", "strategy": "S2", "trades": 2, "wins": 1, "win_rate": 0.5,
        "pnl_usd": 125.0, "avg_r": 0.25,
    }  # fmt: skip
    assert rows[("ES", "S6")]["wins"] == 0
    assert rows[("NQ", "S3")]["pnl_usd"] == 400.0
    assert pnl["by_symbol"]["ES"]["trades"] == 3
    assert pnl["by_symbol"]["ES"]["pnl_usd"] == 125.0
    assert pnl["total"] == {
        "trades": 4,
        "wins": 2,
        "win_rate": 0.5,
        "pnl_usd": 525.0,
        "avg_r": 0.625,
    }
    assert pnl["counterfactuals_ignored"] == 1
    assert state.topics["outcomes"] == 7

    state.roll_day(date(2024, 5, 2))
    assert state.pnl()["total"]["trades"] == 0


def test_dead_letters_drift_models_and_bad_records() -> None:
    state = MonitorState(day=NOW.date())
    for i in range(12):
        state.observe(
            "dlq", encode(dead_letter(NOW + timedelta(seconds=i), f"bad {i}", i)), _ms(NOW)
        )
    state.observe("drift", encode(drift(NOW)), _ms(NOW))
    state.observe("models", encode(manifest(NOW - timedelta(hours=2), "r2", 2)), _ms(NOW))
    state.observe(
        "models", encode(manifest(NOW - timedelta(hours=1), "r1", 1)), _ms(NOW)
    )  # older seq
    state.observe("models", None, _ms(NOW))  # a compaction tombstone is fine
    state.observe("outcomes", b"{not json", _ms(NOW))
    state.observe("drift", encode(outcome(NOW, "ES", "S2", 1.0, 0.1)), _ms(NOW))  # wrong topic
    snap = state.snapshot(
        NOW,
        topic_names={"dlq": "t.dlq", "drift": "t.drift", "models": "t.models"},
        lag=lag_summary([], supported=True, notes=[]),
        trader=summarize_trader("http://x", None, None, "refused"),
    )
    assert snap["dead_letters"]["count"] == 12
    assert snap["dead_letters"]["by_source_topic"] == {"bars": 12}
    latest = snap["dead_letters"]["latest"]
    assert len(latest) == 10 and latest[0]["reason"] == "bad 11" and latest[0]["offset"] == 11
    assert snap["drift"]["count"] == 1
    assert snap["drift"]["latest"][0]["detector"] == "ADWIN"
    model = snap["models"]["latest"]
    assert model["release"] == "r2" and model["sequence"] == 2
    assert model["age_s"] == 7200.0
    assert model["artifacts"] == {"meta": "r2", "exec": "r2", "sizer": "r2"}
    assert snap["models"]["manifests_seen"] == 2
    assert snap["decode_errors"] == {"drift": 1, "outcomes": 1}
    assert snap["trader"] == {
        "reachable": False, "url": "http://x", "note": "trader not reachable", "error": "refused",
    }  # fmt: skip
    json.dumps(snap)  # JSON-ready


def test_rate_uses_record_time_and_the_covered_span() -> None:
    state = MonitorState(day=NOW.date(), rate_window_s=60.0)
    for i in range(120):  # 2/s over the last minute
        state.observe("bars", None, _ms(NOW - timedelta(seconds=59.75) + timedelta(seconds=i / 2)))
    for i in range(50):  # old records outside the window
        state.observe("bars", None, _ms(NOW - timedelta(minutes=30, seconds=i)))
    assert state.rate("bars", NOW) == pytest.approx(2.0, rel=0.03)
    assert state.topics["bars"] == 170
    # a monitor that started 10 s ago divides by 10 s, not by the whole window
    fresh = MonitorState(day=NOW.date(), rate_window_s=60.0)
    fresh.covered_since["bars"] = NOW - timedelta(seconds=10)
    for i in range(50):
        fresh.observe("bars", None, _ms(NOW - timedelta(seconds=9.9) + timedelta(seconds=i / 5)))
    assert fresh.rate("bars", NOW) == pytest.approx(5.0, rel=0.1)
    assert fresh.rate("signals", NOW) == 0.0


_TRADER_METRICS = """
import sys
from prometheus_client import CollectorRegistry, Counter, Gauge, Info, generate_latest
reg = CollectorRegistry()
Info("tradeloop_model_release", "serving release", registry=reg).info({"release": "r7"})
Gauge("tradeloop_model_age_seconds", "age", registry=reg).set(321.0)
Counter("tradeloop_model_swaps_total", "swaps", registry=reg).inc(3)
rej = Counter("tradeloop_model_rejections_total", "rejections", ["reason"], registry=reg)
rej.labels(reason="bad_signature").inc(2)
pnl = Gauge("tradeloop_pnl_usd", "pnl", ["symbol"], registry=reg)
pnl.labels(symbol="ES").set(125.5)
Gauge("tradeloop_outbox_depth", "outbox", registry=reg).set(4)
sys.stdout.buffer.write(generate_latest(reg))
"""


@functools.cache
def _trader_metrics_text() -> bytes:
    """Return /metrics text of a real prometheus_client registry, made in a clean process.

    In this process an imported Feast may have switched prometheus_client to its
    multiprocess mode, where same-named metrics of any registry share one value.
    """
    env = {k: v for k, v in os.environ.items() if "MULTIPROC" not in k.upper()}
    done = subprocess.run(
        [sys.executable, "-c", _TRADER_METRICS], env=env, capture_output=True, check=True
    )
    return done.stdout


def test_trader_metrics_are_read_from_prometheus_text() -> None:
    text = _trader_metrics_text().decode()
    got = parse_trader_metrics(text)
    assert got == {
        "release": "r7", "model_age_s": 321.0, "swaps_total": 3,
        "rejections": {"bad_signature": 2}, "pnl_usd": {"ES": 125.5}, "outbox_depth": 4,
    }  # fmt: skip
    assert parse_trader_metrics("garbage {{{") == {}


@pytest.fixture
def trader_http() -> Iterator[str]:
    """Serve a /healthz JSON and the /metrics of a real prometheus_client registry."""
    metrics = _trader_metrics_text()
    health = {  # the shape of trader/io/api.py's /healthz
        "status": "ok",
        "mode": "paper",
        "outbox": {"enabled": True, "depth": 0},
        "models": {
            "path": "models",
            "release": "r7",
            "age_s": 300.0,
            "swaps": 3,
            "hot_swap": {
                "release": "r7",
                "model_age_s": 300.0,
                "last_swap": {"at": "2024-05-01T15:00:00+00:00", "release": "r7"},
                "last_rejection": {"reason": "bad_signature", "release": "r8"},
                "rejections": {"bad_signature": 2},
            },
        },
        "last_rejected_release": {"reason": "bad_signature", "release": "r8"},
        "rejections": {"bad_signature": 2},
        "engine": {"bars": 10, "age_s": 99999.0},
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, ctype = (
                (json.dumps(health).encode(), "application/json")
                if self.path == "/healthz"
                else (metrics, "text/plain")
            )
            self.send_response(503 if self.path == "/healthz" else 200)  # degraded still answers
            self.send_header("Content-Type", ctype)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_trader_reads_healthz_and_metrics(trader_http: str) -> None:
    got = fetch_trader(trader_http)
    assert got["reachable"] is True
    assert got["status"] == "ok"
    assert got["release"] == "r7"
    assert got["model_age_s"] == 300.0  # /healthz wins over /metrics
    assert got["last_swap"]["release"] == "r7"
    assert got["last_rejection"]["reason"] == "bad_signature"
    assert got["swaps_total"] == 3
    assert got["rejections"] == {"bad_signature": 2}


def test_trader_summary_without_models_or_healthz() -> None:
    rules_only = {
        "status": "ok",
        "models": {"path": "rules", "release": "none", "age_s": None, "swaps": 0, "hot_swap": None},
    }
    got = summarize_trader("http://t", rules_only, {"model_age_s": 1.7e9}, None)
    assert got["release"] == "none" and got["model_age_s"] is None  # no models: no age
    metrics_only = summarize_trader(
        "http://t", None, {"release": "r1", "model_age_s": 5.0, "swaps_total": 1}, None
    )
    assert metrics_only["release"] == "r1" and metrics_only["model_age_s"] == 5.0
    assert metrics_only["note"] == "no /healthz JSON; figures from /metrics"
    flat = summarize_trader(
        "http://t", {"release": "r2", "model_age_s": 9.0, "last_swap": "x"}, None, None
    )
    assert (flat["release"], flat["model_age_s"], flat["last_swap"]) == ("r2", 9.0, "x")


def test_fetch_trader_says_when_it_is_not_reachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    got = fetch_trader(url, timeout_s=0.5)
    assert got["reachable"] is False
    assert got["note"] == "trader not reachable"
    assert "healthz" in got["error"]


def test_render_shows_every_section() -> None:
    state = MonitorState(day=NOW.date())
    state.observe("outcomes", encode(outcome(NOW, "ES", "S2", 250.0, 1.0)), _ms(NOW))
    state.observe("dlq", encode(dead_letter(NOW, "schema.version unsupported")), _ms(NOW))
    state.observe("drift", encode(drift(NOW, "win_rate")), _ms(NOW))
    state.observe("models", encode(manifest(NOW, "rel-42", 42)), _ms(NOW))
    rows = compute_lag({"streams-worker": {("t.bars", 0): 1}}, {("t.bars", 0): 6})
    snap = state.snapshot(
        NOW,
        topic_names={"bars": "t.bars", "outcomes": "t.outcomes", "dlq": "t.dlq"},
        lag=lag_summary(rows, supported=False, notes=["this broker does not list consumer groups"]),
        trader=summarize_trader("http://x", None, None, "refused"),
        meta={"bootstrap": "b:9092", "topic_prefix": "t.", "started_from": "end", "notes": []},
    )
    console = Console(record=True, width=160)
    console.print(render(snap))
    text = console.export_text()
    for needle in (
        "topics", "streams-worker", "250.00", "100.0%", "rel-42", "trader not reachable",
        "schema.version unsupported", "win_rate", "ADWIN", "does not list consumer groups",
    ):  # fmt: skip
        assert needle in text, needle
