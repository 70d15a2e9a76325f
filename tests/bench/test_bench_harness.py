"""The benchmark harness on tiny dummy benchmarks (CI never runs the real ones)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from bench.harness import evaluate, render_markdown, summarize, throughput, validate
from tests import ROOT

GOOD = """
    import os, time
    from bench.harness import summarize, throughput

    def run(quick):
        n = 200 if quick else 20000
        work, empty = [], []
        for _ in range(n):
            t = time.perf_counter(); sum(range(50)); work.append(time.perf_counter() - t)
            t = time.perf_counter(); empty.append(time.perf_counter() - t)
        blob = bytearray(64 * 2**20)  # 64 MB: the harness must see it in the peak RSS
        return {
            "workload": f"{n} x sum(range(50)), pid {os.getpid()}",
            "metrics": {
                "sum": summarize(work, "us", scale=1e6, baseline="empty", label="sum of 50 ints"),
                "rate": throughput(1000, 0.5, "ops/s", baseline="slow"),
                "never": {"median": 5.0, "unit": "ms"},
            },
            "baseline": {
                "empty": summarize(empty, "us", scale=1e6, label="an empty timed block"),
                "slow": {"value": 500.0, "unit": "ops/s"},
            },
            "targets": {
                "sum": {"stat": "p99", "op": "<", "value": 1e6, "unit": "us"},
                "rate": {"op": ">=", "ratio": 1.5},
                "never": {"op": "<", "value": 1.0},
            },
            "rss_mb": {"worker": 12.5},
            "notes": f"quick={quick} blob={len(blob)}",
        }
"""
CRASH = """
    def run(quick):
        raise RuntimeError("broker went away")
"""
INVALID = """
    def run(quick):
        return {"decisions": 10, "p99_us": 80.0}
"""
EXIT = """
    import os
    def run(quick):
        os._exit(3)
"""
LEAKY = """
    import subprocess
    def run(quick):
        p = subprocess.Popen(["sleep", "300"])
        return {"workload": "forgets a child", "metrics": {"m": {"value": 1.0, "unit": "x"}}, "notes": str(p.pid)}
"""
HANG = """
    import time
    def run(quick):
        time.sleep(60)
"""


def _write(d: Path, **modules: str) -> None:
    for name, body in modules.items():
        (d / f"bench_{name}.py").write_text(textwrap.dedent(body))
    (d / "not_a_bench.py").write_text("raise SystemExit('must not be imported')\n")


def _harness(*args: str) -> subprocess.CompletedProcess[str]:
    root = ROOT
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_harness_runs_each_bench_in_its_own_process_and_writes_both_files(tmp_path: Path) -> None:
    benches, out = tmp_path / "benches", tmp_path / "out"
    benches.mkdir()
    _write(benches, good=GOOD, crash=CRASH, invalid=INVALID, exits=EXIT, hang=HANG, leaky=LEAKY)

    # `hang` waits the timeout out; the others finish in ~0.2 s (20x margin)
    proc = _harness("--quick", "--dir", str(benches), "--out", str(out), "--timeout", "4")

    assert proc.returncode == 1, proc.stdout + proc.stderr  # some benchmarks failed
    doc = json.loads((out / "results.json").read_text())
    assert doc["quick"] is True
    machine = doc["machine"]
    assert machine["cpu"] and machine["cores_logical"] >= 1 and machine["memory_gb"] > 0
    assert machine["python"] == sys.version.split()[0]
    assert "numpy" in machine["packages"] and "onnxruntime" in machine["packages"]
    by_name = {e["name"]: e for e in doc["benchmarks"]}
    assert sorted(by_name) == ["crash", "exits", "good", "hang", "invalid", "leaky"]

    good = by_name["good"]
    assert good["status"] == "ok" and good["quick"] is True
    result = good["result"]
    assert result["workload"].startswith("200 x sum(range(50))")
    assert not result["workload"].endswith(f"pid {os.getpid()}")  # it ran in a child process
    assert result["notes"].startswith("quick=True")
    sum_metric = result["metrics"]["sum"]
    assert sum_metric["n"] == 200 and sum_metric["median"] <= sum_metric["p99"]
    assert result["ratios"]["sum"]["vs"] == "empty"
    assert result["ratios"]["sum"]["value"] == pytest.approx(
        sum_metric["median"] / result["baseline"]["empty"]["median"]
    )
    assert result["ratios"]["rate"]["value"] == pytest.approx(4.0)
    assert result["targets"]["sum"]["met"] is True
    assert result["targets"]["rate"]["met"] is True and result["targets"]["rate"]["actual"] == 4.0
    assert result["targets"]["never"]["met"] is False
    assert good["peak_rss_mb"] > 64  # the 64 MB buffer of that process, measured by the harness

    assert by_name["crash"]["status"] == "error"
    assert "RuntimeError: broker went away" in by_name["crash"]["error"]
    assert by_name["invalid"]["status"] == "invalid"
    assert any("workload" in e for e in by_name["invalid"]["errors"])
    assert by_name["invalid"]["raw"] == {"decisions": 10, "p99_us": 80.0}
    assert by_name["exits"]["status"] == "crashed" and "exit code 3" in by_name["exits"]["error"]
    assert by_name["hang"]["status"] == "timeout"
    leaky = by_name["leaky"]
    assert leaky["status"] == "ok" and leaky["leftovers_killed"] is True
    pid = int(leaky["result"]["notes"])
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    md = (out / "RESULTS.md").read_text()
    assert (
        "| benchmark | workload | metric | median | p99 | ratio vs baseline | target | met? |" in md
    )
    assert "| good | 200 x sum(range(50))" in md
    assert "sum of 50 ints" in md and "baseline: an empty timed block" in md
    assert "4.00x slow" in md and "value >= 1.5x slow" in md
    assert "| **no** |" in md and "| yes |" in md
    assert "## Memory (peak RSS)" in md and "worker 12.5 MB" in md
    assert "## Not measured" in md
    for name in ("crash", "invalid", "exits", "hang"):
        assert f"- **{name}**:" in md
    assert machine["cpu"] in md


def test_only_reruns_one_bench_and_keeps_the_others(tmp_path: Path) -> None:
    benches, out = tmp_path / "benches", tmp_path / "out"
    benches.mkdir()
    _write(benches, good=GOOD, crash=CRASH)
    assert _harness("--quick", "--dir", str(benches), "--out", str(out)).returncode == 1
    first = {e["name"]: e for e in json.loads((out / "results.json").read_text())["benchmarks"]}

    proc = _harness("--quick", "--dir", str(benches), "--out", str(out), "--only", "good")

    assert proc.returncode == 0, proc.stderr
    second = {e["name"]: e for e in json.loads((out / "results.json").read_text())["benchmarks"]}
    assert second["crash"] == first["crash"]
    assert second["good"]["result"]["workload"] != first["good"]["result"]["workload"]  # new pid
    listing = _harness("--list", "--dir", str(benches))
    assert listing.stdout.split() == [
        "crash",
        str(benches / "bench_crash.py"),
        "good",
        str(benches / "bench_good.py"),
    ]
    unknown = _harness("--quick", "--dir", str(benches), "--out", str(out), "--only", "nope")
    assert unknown.returncode != 0 and "no benchmark named nope" in unknown.stderr


def test_schema_validation_and_helpers() -> None:
    assert summarize([3, 1, 2, 4], "s")["median"] == 2.5
    assert summarize(range(101), "x")["p99"] == pytest.approx(99.0)
    assert throughput(10, 2, "ev/s")["value"] == 5.0
    ok = {
        "workload": "w",
        "metrics": {"a": {"median": 2.0, "unit": "us", "baseline": "b"}},
        "baseline": {"b": {"median": 1.0, "unit": "us"}},
        "targets": {"a": {"op": "<=", "ratio": 2.0}},
    }
    assert validate(ok) == []
    assert evaluate(ok)["targets"]["a"]["met"] is True
    bad = {
        "metrics": {"a": {"median": "fast", "baseline": "zz"}},
        "targets": {"a": {"op": "~", "value": 1}, "q": {"op": "<", "value": 1}},
    }
    errors = validate(bad)
    for needle in ("workload", "metrics.a.median", "metrics.a needs a 'unit'", "unknown baseline 'zz'",
                   "targets.a needs 'op'", "targets.q names no metric"):  # fmt: skip
        assert any(needle in e for e in errors), (needle, errors)
    assert validate([1, 2]) == ["run() must return a dict, got list"]
    md = render_markdown(
        {"generated_at": "t", "quick": False, "machine": {"cpu": "c", "cores_logical": 1, "cores_physical": 1,
         "memory_gb": 1, "os": "o", "python": "3", "packages": {}, "git_commit": ""},
         "benchmarks": [{"name": "x", "status": "ok", "peak_rss_mb": 1.0, "result": evaluate(ok)}]}
    )  # fmt: skip
    assert "| x | w | a | 2 us | - | 2.00x b | median <= 2x b | yes |" in md
