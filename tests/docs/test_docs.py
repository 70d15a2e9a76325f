"""The docs site builds strict, its links resolve, and what it documents exists."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from infra.cli import VERBS, cli
from infra.settings import Settings
from tests import ROOT

DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_BYTES = 12 * 1024
PAGES = sorted([README, *DOCS.rglob("*.md")])

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
COMMAND = re.compile(r"(?:^|[\s(])tradeloop((?:\s+[^\s|>#&;]+)+)")
MAKE = re.compile(r"^\s*make ([a-z][\w-]*)")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _code(text: str) -> list[str]:
    """Return every line of fenced code and every inline code span of a page."""
    blocks = FENCE.findall(text)
    lines = [line.split(" #")[0] for block in blocks for line in block.splitlines()]
    prose = FENCE.sub("", text)
    return lines + INLINE_CODE.findall(prose)


def _slug(heading: str) -> str:
    """Return the anchor Python-Markdown's toc gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", _text(path))
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, re.M)}


def _build(out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    args = [sys.executable, "-m", "mkdocs", "build", "--strict"]
    args += ["-f", str(ROOT / "mkdocs.yml"), "-d", str(out)]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def test_the_site_builds_strict(tmp_path: Path) -> None:
    out = tmp_path / "site"
    done = _build(out)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    for page in ("index.html", "design/index.html", "venues/index.html", "trader/index.html"):
        assert (out / page).is_file(), f"{page} missing from the built site"
    results = _text(ROOT / "bench" / "RESULTS.md").splitlines()
    generated = next(line for line in results if line.startswith("Generated "))
    bench_html = _text(out / "benchmarks" / "index.html")
    assert generated.split("`")[0].strip() in bench_html, (
        "benchmarks page does not include RESULTS.md"
    )


def test_a_broken_link_fails_the_strict_build(tmp_path: Path) -> None:
    # The strict build is what CI relies on; show it rejects a link to nowhere.
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# x\n\n[gone](missing.md)\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text("site_name: x\nstrict: true\ntheme: {name: material}\n")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    args = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config)]
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode != 0
    assert "missing.md" in done.stdout + done.stderr


def test_readme_is_at_most_12_kib() -> None:
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes (> {README_MAX_BYTES})"


def test_readme_starts_with_the_two_commands() -> None:
    text = _text(README)
    head = text[: text.index("## Architecture")]
    assert "make demo" in head and "make test" in head


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    bad = []
    for target in LINK.findall(FENCE.sub("", _text(page))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # http:, https:, mailto:
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            bad.append(f"{target}: {resolved} does not exist")
        elif fragment and resolved.suffix == ".md" and fragment not in _anchors(resolved):
            bad.append(f"{target}: no heading with anchor #{fragment}")
    assert not bad, "\n".join(bad)


def test_settings_page_is_what_the_command_renders() -> None:
    rendered = CliRunner().invoke(cli, ["config", "--markdown"])
    assert rendered.exit_code == 0, rendered.output
    committed = _text(DOCS / "settings.md")
    assert committed == rendered.output, (
        "docs/settings.md is stale: run `.venv/bin/tradeloop config --markdown > docs/settings.md`"
    )


def _aliases(model: type[BaseModel]) -> list[str]:
    names: list[str] = []
    for field in model.model_fields.values():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names += _aliases(kind)
        elif isinstance(field.validation_alias, str):
            names.append(field.validation_alias)
    return names


def test_every_setting_is_documented() -> None:
    page = _text(DOCS / "settings.md")
    names = _aliases(Settings)
    assert len(names) >= 50, names
    missing = [n for n in names if f"`{n}`" not in page]
    assert not missing, f"docs/settings.md lacks settings: {missing}"


def _command(words: list[str]) -> tuple[click.Command, list[str]]:
    """Resolve `tradeloop WORDS...` to its click command and the words after it."""
    verb, rest = words[0], words[1:]
    assert verb in VERBS, f"`tradeloop {verb}` is not a verb"
    module, attr = VERBS[verb][0].split(":")
    command: click.Command = getattr(importlib.import_module(module), attr)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        assert sub is not None, f"`{' '.join(['tradeloop', *words])}`: no subcommand {rest[0]}"
        command, rest = sub, rest[1:]
    return command, rest


def _documented_commands() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for page in PAGES:
        for line in _code(_text(page)):
            for match in COMMAND.finditer(line):
                words = [w.strip("[]") for w in match.group(1).split()]
                words = [w for w in words if w and not w.startswith("`")]
                if words and not words[0].startswith("-"):
                    found.setdefault(" ".join(words), []).append(str(page.relative_to(ROOT)))
    return found


def test_every_documented_command_and_option_exists() -> None:
    found = _documented_commands()
    assert len(found) >= 40, sorted(found)
    bad = []
    for line, where in sorted(found.items()):
        try:
            command, rest = _command(line.split())
        except AssertionError as exc:
            bad.append(f"{where[0]}: {exc}")
            continue
        known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        known |= {"-h", "--help"}
        for word in rest:
            option = word.split("=")[0]
            if option.startswith("-") and option not in known:
                bad.append(f"{where[0]}: `tradeloop {line}`: no option {option}")
    assert not bad, "\n".join(bad)


def test_every_documented_make_target_exists() -> None:
    targets = set(re.findall(r"^([a-zA-Z_-]+):", _text(ROOT / "Makefile"), re.M))
    bad = sorted(
        f"{page.relative_to(ROOT)}: make {target}"
        for page in PAGES
        for line in _code(_text(page))
        for target in MAKE.findall(line)
        if target not in targets
    )
    assert "docs" in targets and not bad, "\n".join(bad)


PATH_IN_CODE = re.compile(
    r"`((?:infra|streams|features|training|trader|tests|bench|docs|\.github|\.ci)/[\w./-]*)`"
)
# written by `make bench` / `make soak` or by numba's first compile, not in a clean clone
GENERATED = ("bench/out/", "features/__pycache__")


def test_every_documented_path_exists() -> None:
    bad = sorted(
        f"{page.relative_to(ROOT)}: {path}"
        for page in PAGES
        for path in PATH_IN_CODE.findall(_text(page))
        if "..." not in path and not path.startswith(GENERATED) and not (ROOT / path).exists()
    )
    assert not bad, "\n".join(bad)
