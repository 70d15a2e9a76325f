"""`tradeloop lake check`: unreadable files and offset continuity per topic and partition.

Every data file is read (its offset columns only). A file that is not valid parquet,
or whose rows do not match the offsets its name promises, is a finding. Per topic
and partition the offsets of all files are put together: an offset held by two
files is an overlap, a missing offset between the smallest and the largest is a
gap. Records that never reach the lake by design (dead-lettered by the worker: the
lake's `dlq` rows name their source topic, partition and offset) close their gap.
"""

from __future__ import annotations

import itertools
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from infra.contracts.topics import LAKE_TOPICS
from infra.lake import LakeFileError, list_files, read_parquet
from infra.objectstore import ObjectStore, store_for_uri

__all__ = ["Finding", "LakeReport", "check_lake", "lake", "offset_runs"]


@dataclass(frozen=True)
class Finding:
    """One problem: kind (`unreadable`, `misnamed`, `gap`, `overlap`), where and what."""

    kind: str
    topic: str
    partition: int | None
    detail: str

    def line(self) -> str:
        """Return the finding as one line of text."""
        where = self.topic if self.partition is None else f"{self.topic}:{self.partition}"
        return f"{self.kind:<10} {where:<16} {self.detail}"


@dataclass
class LakeReport:
    """What the check read and found."""

    files: int = 0
    rows: int = 0
    partitions: int = 0
    findings: list[Finding] = field(default_factory=list)

    def count(self, kind: str) -> int:
        """Return how many findings of a kind there are."""
        return sum(1 for f in self.findings if f.kind == kind)


def offset_runs(offsets: Iterable[int]) -> list[tuple[int, int]]:
    """Return sorted offsets as inclusive runs: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for o in sorted(set(offsets)):
        if runs and o == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], o)
        else:
            runs.append((o, o))
    return runs


def _describe(runs: Sequence[tuple[int, int]], limit: int = 5) -> str:
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit]]
    more = f" and {len(runs) - limit} more ranges" if len(runs) > limit else ""
    return ", ".join(parts) + more


def _dead_lettered(store: ObjectStore) -> set[tuple[str, int, int]]:
    """Return (full source topic, partition, offset) of every dead letter in the lake."""
    out: set[tuple[str, int, int]] = set()
    for info in list_files(store, "dlq"):
        try:
            table = read_parquet(
                store, str(info["key"]), ["source_topic", "source_partition", "source_offset"]
            )
        except LakeFileError:
            continue  # reported with the dlq topic's own files
        for t, p, o in zip(
            table.column("source_topic").to_pylist(),
            table.column("source_partition").to_pylist(),
            table.column("source_offset").to_pylist(),
            strict=True,
        ):
            if t is not None and p is not None and o is not None:
                out.add((str(t), int(p), int(o)))
    return out


def _is_source(full_topic: str, short: str) -> bool:
    return full_topic == short or full_topic.endswith(f".{short}")


def check_lake(store: ObjectStore, topics: Iterable[str] = LAKE_TOPICS) -> LakeReport:
    """Read every data file of `topics`; return the unreadable ones, gaps and overlaps."""
    report = LakeReport()
    dead = _dead_lettered(store)
    for topic in topics:
        seen: dict[int, Counter[int]] = defaultdict(Counter)
        for info in list_files(store, topic):
            report.files += 1
            key, part = str(info["key"]), int(info["partition"])
            try:
                table = read_parquet(store, key, ["kafka_partition", "kafka_offset"])
            except LakeFileError as exc:
                report.findings.append(Finding("unreadable", topic, part, str(exc)))
                continue
            offsets = [int(o) for o in table.column("kafka_offset").to_pylist()]
            parts = set(table.column("kafka_partition").to_pylist())
            if (
                not offsets
                or parts != {part}
                or (min(offsets), max(offsets))
                != (
                    info["first"],
                    info["last"],
                )
            ):
                got = f"{min(offsets)}-{max(offsets)}" if offsets else "no rows"
                report.findings.append(
                    Finding(
                        "misnamed",
                        topic,
                        part,
                        f"{store.uri(key)} holds partitions {sorted(parts)} offsets {got}",
                    )
                )
            report.rows += len(offsets)
            seen[part].update(offsets)
        for part, counts in sorted(seen.items()):
            report.partitions += 1
            twice = offset_runs(o for o, n in counts.items() if n > 1)
            if twice:
                report.findings.append(
                    Finding("overlap", topic, part, f"offsets in two files: {_describe(twice)}")
                )
            explained = {o for (t, p, o) in dead if p == part and _is_source(t, topic)}
            runs = offset_runs(counts)
            holes = [
                (a[1] + 1, b[0] - 1)
                for a, b in itertools.pairwise(runs)
                if not all(o in explained for o in range(a[1] + 1, b[0]))
            ]
            if holes:
                report.findings.append(
                    Finding("gap", topic, part, f"offsets missing: {_describe(holes)}")
                )
    return report


@click.group()
def lake() -> None:
    """Inspect the event lake."""


@lake.command("check")
@click.option("--lake", "lake_uri", default="", help="Lake root (default: the settings' lake).")
@click.option(
    "--topic", "topics", multiple=True, help="Check only these topics (default: every lake topic)."
)
def check(lake_uri: str, topics: tuple[str, ...]) -> None:
    """Find unreadable files, offset gaps and overlaps; exit 1 on any finding."""
    from infra.settings import get_settings

    settings = get_settings()
    uri = lake_uri or settings.lake
    report = check_lake(store_for_uri(uri, settings), topics or LAKE_TOPICS)
    for finding in report.findings:
        click.echo(finding.line())
    summary: dict[str, Any] = {
        "files": report.files,
        "rows": report.rows,
        "partitions": report.partitions,
        **{k: report.count(k) for k in ("unreadable", "misnamed", "gap", "overlap")},
    }
    click.echo(f"lake {uri}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    sys.exit(1 if report.findings else 0)
