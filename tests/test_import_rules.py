"""DESIGN.md's dependency rules, checked on the source and in a running trader."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("infra", "streams", "features", "training", "trader")
# package -> project modules it may import (prefix match); DESIGN.md's table.
ALLOWED: dict[str, tuple[str, ...]] = {
    "infra": ("infra",),
    "streams": ("streams", "infra", "features"),
    "features": ("features", "infra", "streams.events"),
    "training": ("training", "infra", "features", "streams.events"),
    "trader": (
        "trader",
        "infra",
        "streams.events",
        "features.compute",
        "features.vectors",
        "features.stream",
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


def test_a_trading_process_never_loads_the_heavy_libraries(tmp_path: Path) -> None:
    code = f"""
import sys
from click.testing import CliRunner
from trader.cli import backtest
result = CliRunner().invoke(backtest, ["--feed", "sim", "--bars", "3000", "--out", {str(tmp_path)!r}, "--no-progress", "--no-plot"])
assert result.exit_code == 0, result.output
import trader.live, trader.hotswap, trader.api, trader.canary
print("loaded:" + ",".join(m for m in {TRADER_BANNED!r} if m in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "loaded:", out.stdout[-500:]
