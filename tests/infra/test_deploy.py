"""infra/deploy: IAM and bucket policies, the Grafana dashboard, Prometheus, the Dockerfile."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests import ROOT

DEPLOY = ROOT / "infra" / "deploy"
IAM = DEPLOY / "iam"

#: The metric contract of issue 7 (trader, then streams worker).
METRICS: dict[str, str] = {
    "tradeloop_decisions_total": "counter",
    "tradeloop_decision_latency_seconds": "histogram",
    "tradeloop_outbox_depth": "gauge",
    "tradeloop_events_out_total": "counter",
    "tradeloop_model_release_info": "gauge",
    "tradeloop_model_age_seconds": "gauge",
    "tradeloop_model_swaps_total": "counter",
    "tradeloop_model_rejections_total": "counter",
    "tradeloop_pnl_usd": "gauge",
    "tradeloop_venue_silences_total": "counter",
    "tradeloop_stream_events_in_total": "counter",
    "tradeloop_stream_events_out_total": "counter",
    "tradeloop_dead_letters_total": "counter",
    "tradeloop_lake_files_written_total": "counter",
    "tradeloop_feast_push_seconds": "histogram",
}
TRADER_METRICS = set(list(METRICS)[:10])
STREAMS_METRICS = set(list(METRICS)[10:])
METRIC_REF = re.compile(r"\btradeloop_[a-z_]+\b")


def _base(name: str) -> str:
    """Return the metric a series belongs to (`..._bucket` of a histogram -> the histogram)."""
    for suffix in ("_bucket", "_sum", "_count"):
        stem = name.removesuffix(suffix)
        if stem != name and METRICS.get(stem) == "histogram":
            return stem
    return name


def _policy(name: str) -> dict[str, Any]:
    return dict(json.loads((IAM / name).read_text()))


def _statements(doc: dict[str, Any], effect: str = "Allow") -> list[dict[str, Any]]:
    return [s for s in doc["Statement"] if s["Effect"] == effect]


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _allowed(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (a, r)
        for s in _statements(doc)
        for a in _as_list(s["Action"])
        for r in _as_list(s["Resource"])
    ]


# IAM -----------------------------------------------------------------------------------


def test_every_policy_is_valid_and_never_wildcards() -> None:
    files = sorted(p.name for p in IAM.glob("*.json"))
    assert files == [
        "bucket-policy.json", "feature-server-policy.json", "streams-policy.json",
        "trader-policy.json", "trainer-policy.json",
    ]  # fmt: skip
    for name in files:
        doc = _policy(name)
        assert doc["Version"] == "2012-10-17"
        assert all(s.get("Sid") for s in doc["Statement"]), name
        for action, resource in _allowed(doc):
            assert action.startswith("s3:") and "*" not in action, (name, action)
            assert resource.startswith("arn:aws:s3:::${S3_BUCKET}"), (name, resource)


def test_trader_reads_models_only() -> None:
    allowed = _allowed(_policy("trader-policy.json"))
    for action, resource in allowed:
        assert not re.search(r"Put|Delete|Create|Abort|Restore|Replicate", action), action
        assert action.split(":")[1].startswith(("Get", "List")), action
        if resource.endswith("*"):
            assert resource == "arn:aws:s3:::${S3_BUCKET}/models/*"
    assert (
        "s3:GetObjectVersion",
        "arn:aws:s3:::${S3_BUCKET}/models/*",
    ) in allowed  # pinned versions
    lists = [
        s for s in _statements(_policy("trader-policy.json")) if "s3:ListBucket" in s["Action"]
    ]
    assert lists[0]["Condition"]["StringLike"]["s3:prefix"] == ["models/*"]


def test_trainer_writes_models_and_reads_the_lake() -> None:
    allowed = _allowed(_policy("trainer-policy.json"))
    writes = {r for a, r in allowed if a == "s3:PutObject"}
    assert writes == {"arn:aws:s3:::${S3_BUCKET}/models/*"}  # artifacts and manifests
    assert ("s3:GetObject", "arn:aws:s3:::${S3_BUCKET}/lake/*") in allowed
    assert not any("Delete" in a for a, _ in allowed)


def test_streams_worker_writes_the_lake_only() -> None:
    allowed = _allowed(_policy("streams-policy.json"))
    assert {r for a, r in allowed if a == "s3:PutObject"} == {"arn:aws:s3:::${S3_BUCKET}/lake/*"}
    assert not any("models" in r for _, r in allowed)
    assert not any("Delete" in a for a, _ in allowed)
    feast = _allowed(_policy("feature-server-policy.json"))
    assert {a for a, _ in feast} == {"s3:GetObject", "s3:ListBucket"}


def test_bucket_policy_denies_plain_http_foreign_writers_and_history_loss() -> None:
    doc = _policy("bucket-policy.json")
    assert not _statements(doc, "Allow")  # it only narrows what IAM grants
    denies = {s["Sid"]: s for s in _statements(doc, "Deny")}
    assert denies["DenyPlainHttp"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    history = denies["KeepHistoryForRollback"]["Action"]
    assert "s3:DeleteObjectVersion" in history and "s3:PutBucketVersioning" in history
    trainer = denies["OnlyTheTrainerWritesModels"]["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    assert any(a.endswith(":role/tradeloop-trainer") for a in trainer)
    streams = denies["OnlyTheStreamsWorkerWritesTheLake"]["Condition"]["ArnNotEquals"]
    assert any(a.endswith(":role/tradeloop-streams") for a in streams["aws:PrincipalArn"])


def _render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("iam_render", IAM / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_render_fills_the_bucket_and_account(tmp_path: Path) -> None:
    render = _render_module()
    assert render.main(["--bucket", "acme-models", "--out", str(tmp_path / "minio")]) == 0
    minio = sorted(p.name for p in (tmp_path / "minio").iterdir())
    assert "bucket-policy.json" not in minio and "trader-policy.json" in minio  # no account
    written = render.render_dir(
        {"S3_BUCKET": "acme-models", "AWS_ACCOUNT_ID": "123456789012"}, tmp_path / "aws"
    )
    assert len(written) == 5
    for path in written:
        text = path.read_text()
        assert "${" not in text and "acme-models" in text
        json.loads(text)
    bucket = json.loads((tmp_path / "aws" / "bucket-policy.json").read_text())
    assert "arn:aws:iam::123456789012:role/tradeloop-admin" in json.dumps(bucket)
    with pytest.raises(ValueError, match="not a valid bucket name"):
        render.render_dir({"S3_BUCKET": "Bad_Bucket"}, tmp_path / "bad")
    assert render.main(["--bucket", "", "--out", str(tmp_path / "x")]) == 2


# Metrics, dashboard, Prometheus ------------------------------------------------------------


def _exposed(registry: CollectorRegistry) -> dict[str, str]:
    out = {}
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        out[name] = family.type
    return out


def test_the_metric_contract_is_what_trader_and_streams_expose() -> None:
    from streams.metrics import StreamMetrics
    from trader import metrics as trader_metrics

    trader = _exposed(trader_metrics.REGISTRY)
    streams = _exposed(StreamMetrics().registry)
    for name in TRADER_METRICS:
        assert trader.get(name) == METRICS[name], (name, trader.get(name))
    for name in STREAMS_METRICS:
        assert streams.get(name) == METRICS[name], (name, streams.get(name))


def _exprs(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [e for k, v in obj.items() for e in ([v] if k == "expr" else _exprs(v))]
    if isinstance(obj, list):
        return [e for v in obj for e in _exprs(v)]
    return []


def test_dashboard_is_valid_and_queries_only_contract_metrics() -> None:
    dash = json.loads((DEPLOY / "grafana" / "tradeloop.json").read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    exprs = _exprs(dash)
    assert len(exprs) >= 15
    used = {_base(m) for e in exprs for m in METRIC_REF.findall(e)}
    assert used == set(METRICS), f"unknown: {used - set(METRICS)}; unused: {set(METRICS) - used}"
    # histograms are read as histograms: p99 from buckets
    assert any(
        "histogram_quantile(0.99" in e and "decision_latency_seconds_bucket" in e for e in exprs
    )
    assert any("histogram_quantile(0.99" in e and "feast_push_seconds_bucket" in e for e in exprs)
    for e in exprs:  # counters only through rate/increase
        for m in METRIC_REF.findall(e):
            if METRICS.get(m) == "counter":
                assert re.search(rf"(rate|increase)\({m}\[", e), e
    # panels sit on the 24-column grid without overlapping
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps"
                cells.add((x, y))
    titles = " ".join(p["title"].lower() for p in panels)
    for needle in ("decision", "latency", "outbox", "events", "dead letters", "lake", "feast",
                   "release", "age", "swaps", "pnl"):  # fmt: skip
        assert needle in titles, needle
    # datasource: the provisioned Prometheus
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    assert all(p.get("datasource", {}).get("uid", uid) == uid for p in panels)
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/tradeloop.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_prometheus_scrapes_both_services_and_rules_use_contract_metrics() -> None:
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert (
        jobs["trader"]["metrics_path"] == "/metrics"
        and jobs["streams"]["metrics_path"] == "/metrics"
    )
    assert prom["rule_files"] == ["/etc/prometheus/tradeloop-rules.yml"]
    rules = yaml.safe_load((DEPLOY / "prometheus-rules.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert exprs and all(r.get("alert") for g in rules["groups"] for r in g["rules"])
    for e in exprs:
        for m in METRIC_REF.findall(e):
            assert _base(m) in METRICS, m


def test_dockerfile_builds_one_cpu_image_as_a_non_root_user() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert "https://download.pytorch.org/whl/cpu -c constraints.txt torch" in text
    assert "-c constraints.txt '.[streams,training,reports]'" in text
    assert re.search(r"^USER tradeloop$", text, re.M)
    assert "torch.cuda.is_available()" in text
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ".env" in ignore and ".venv" in ignore and ".git" in ignore
