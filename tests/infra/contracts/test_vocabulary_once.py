"""Each vocabulary is spelled in exactly one module: a grep for stray copies."""

from __future__ import annotations

import re
from pathlib import Path

from infra.contracts import FEATURE_NAMES, LATEST_MANIFEST_KEY, MANIFEST_PREFIX, STRATEGIES, TOPICS
from tests import ROOT

PACKAGES = ("infra", "streams", "features", "training", "trader", "bench", "tests")
HOME = {ROOT / "infra" / "contracts"}
THIS = Path(__file__).resolve()


def _sources() -> list[Path]:
    return [
        p
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
        if not any(h in p.parents for h in HOME) and p != THIS and ".venv" not in p.parts
    ]


def _quoted_runs(text: str, words: tuple[str, ...], run: int) -> list[str]:
    """Return places where `run` or more of `words` stand quoted one after another."""
    alternatives = "|".join(re.escape(w) for w in words)
    item = rf"""["'](?:{alternatives})["']"""
    pattern = re.compile(rf"{item}(?:\s*,\s*(?:#[^\n]*\n\s*)?{item}){{{run - 1},}}")
    return [m.group(0)[:80] for m in pattern.finditer(text)]


def _in_order(text: str, words: tuple[str, ...]) -> list[str]:
    """Return places where all `words` stand quoted in their canonical order."""
    pattern = re.compile(r"\s*,\s*".join(rf"[\"']{re.escape(w)}[\"']" for w in words))
    return [m.group(0) for m in pattern.finditer(text)]


def test_the_feature_name_list_is_spelled_once() -> None:
    stray = {
        str(p.relative_to(ROOT)): hits
        for p in _sources()
        if (hits := _quoted_runs(p.read_text(), FEATURE_NAMES, 6))
    }
    assert stray == {}


def test_the_strategy_ids_are_spelled_once() -> None:
    stray = {
        str(p.relative_to(ROOT)): hits
        for p in _sources()
        if (hits := _in_order(p.read_text(), STRATEGIES))
    }
    assert stray == {}


def test_the_topic_list_is_spelled_once() -> None:
    stray = {
        str(p.relative_to(ROOT)): hits
        for p in _sources()
        if (hits := _quoted_runs(p.read_text(), tuple(TOPICS), 5))
    }
    assert stray == {}


def test_the_storage_keys_are_spelled_once() -> None:
    needles = (LATEST_MANIFEST_KEY, MANIFEST_PREFIX)
    stray = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()[:80]}"
        for p in _sources()
        if p.parts[len(ROOT.parts)] != "tests"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if any(f'"{k}' in line or f"'{k}" in line for k in needles)
    ]
    assert stray == []


def test_the_grep_finds_a_planted_copy() -> None:
    planted = "NAMES = (\n" + "".join(f'    "{n}",  # x\n' for n in FEATURE_NAMES[3:9]) + ")"
    assert _quoted_runs(planted, FEATURE_NAMES, 6)
    assert not _quoted_runs(planted.replace('"rv_30"', "RV"), FEATURE_NAMES, 6)
    assert _in_order('x = ["S2", "S3", "S6", "S11"]', STRATEGIES)
    assert not _in_order('x = ["S6", "S2", "S11", "S3"]', STRATEGIES)
