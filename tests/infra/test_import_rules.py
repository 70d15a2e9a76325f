"""DESIGN.md's dependency rules, checked on the source and in a running trader."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests import ROOT

PACKAGES = ("infra", "streams", "features", "training", "trader")
# package -> project modules it may import (prefix match); DESIGN.md's table.
ALLOWED: dict[str, tuple[str, ...]] = {
    "infra": ("infra",),
    "streams": ("streams", "infra", "features"),
    "features": ("features", "infra"),
    "training": ("training", "infra", "features"),
    "trader": (
        "trader",
        "infra",
        "features.calendar",
        "features.compute",
        "features.tape",
        "features.rolls",
        "features.vectors",
        "features.stream",
        "features.trade_stats",
    ),
}
TRADER_BANNED = ("faust", "feast", "torch", "sklearn")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_packages_import_only_what_design_allows() -> None:
    bad = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for name in _imports(path):
                top = name.split(".")[0]
                if top in PACKAGES and not name.startswith(ALLOWED[package]):
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
                if package == "trader" and top in TRADER_BANNED:
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_contracts_import_nothing_of_ours_but_themselves() -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / "infra" / "contracts").rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] in PACKAGES and not name.startswith("infra.contracts")
    ]
    assert not bad, "\n".join(bad)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _project_imports(path: Path, known: set[str]) -> set[str]:
    """Return the project modules a module imports anywhere (type-only imports too)."""
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in tree.body:
        for sub in ast.walk(node):
            names: list[str] = []
            if isinstance(sub, ast.Import):
                names = [a.name for a in sub.names]
            elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                names = [sub.module] + [f"{sub.module}.{a.name}" for a in sub.names]
            out.update(n for n in names if n in known)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_modules() -> None:
    paths = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    known = set(paths)
    graph = {name: _project_imports(path, known) - {name} for name, path in paths.items()}
    # a package's __init__ importing its own modules is not a cycle of concern
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    assert _cycles(graph) == []


def test_a_trading_process_never_loads_the_heavy_libraries(tmp_path: Path) -> None:
    code = f"""
import sys
from click.testing import CliRunner
from trader.cli import backtest
result = CliRunner().invoke(backtest, ["--feed", "sim", "--bars", "3000", "--out", {str(tmp_path)!r}, "--no-progress", "--no-plot"])
assert result.exit_code == 0, result.output
import trader.live, trader.delivery.hotswap, trader.io.api, trader.delivery.canary
print("loaded:" + ",".join(m for m in {TRADER_BANNED!r} if m in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "loaded:", out.stdout[-500:]


def test_the_live_trader_never_loads_numba() -> None:
    # numba (and LLVM, about 200 MB) is for batched backtests only (features/tape.py)
    code = """
import sys
import trader.cli, trader.live, trader.core.engine, trader.delivery.hotswap, trader.io.api
print("numba" in sys.modules, "llvmlite" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]
