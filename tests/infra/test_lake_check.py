"""Bad data at rest: unreadable lake files are skipped and counted by readers (lake,
replay, training) and found by `tradeloop lake check` with offset gaps and overlaps."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from infra.cli import cli
from infra.contracts import Event, encode, topic_for
from infra.lake import lake_key, list_files, read_topic, skipped_files, write_batch
from infra.lake_check import check_lake, offset_runs
from infra.objectstore import LocalObjectStore
from infra.settings import Settings
from streams.replay import lake_records
from tests.helpers import SettingsFactory
from tests.kit.events import dead_letter
from tests.kit.synth import synthetic_events
from training.datasets import read_columns

EVENTS = list(synthetic_events(600))


def _rows(events: list[Event], partition: int, first: int) -> list[dict[str, object]]:
    rows = []
    for i, e in enumerate(events):
        row = e.to_dict()
        row.update(kafka_partition=partition, kafka_offset=first + i, payload=encode(e))
        rows.append(row)
    return rows


def _lake(root: Path) -> tuple[LocalObjectStore, dict[str, list[Event]]]:
    """Write each source topic as partition 0 in two batches (offsets 0.. contiguous)."""
    store = LocalObjectStore(root)
    by_topic: dict[str, list[Event]] = {}
    for e in EVENTS:
        by_topic.setdefault(topic_for(e), []).append(e)
    for topic, events in by_topic.items():
        half = len(events) // 2
        write_batch(store, topic, 0, _rows(events[:half], 0, 0))
        write_batch(store, topic, 0, _rows(events[half:], 0, half))
    return store, by_topic


def _truncate(store: LocalObjectStore, topic: str) -> tuple[str, int]:
    """Cut the first file of a topic in half; return its URI and how many rows it held."""
    info = list_files(store, topic)[0]
    path = Path(store.uri(str(info["key"])))
    rows = read_topic(str(store.root), topic, store=store).num_rows
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    left = read_topic(str(store.root), topic, store=store).num_rows
    return str(path), rows - left


def test_a_truncated_file_is_skipped_named_and_counted_by_every_reader(
    tmp_path: Path, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    store, by_topic = _lake(tmp_path / "lake")
    settings: Settings = make_settings(kafka=False, LAKE_URI=str(tmp_path / "lake"))
    (tmp_path / "lake" / "signals" / "x.parquet").write_bytes(b"not parquet")  # not a lake key
    before = len(skipped_files())
    with caplog.at_level(logging.WARNING, logger="infra.lake"):
        uri, lost = _truncate(store, "signals")
    assert lost > 0
    assert [s.uri for s in skipped_files()[before:]] == [uri]
    assert any(uri in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)

    # replay reads what is readable, in order, and skips the same file (counted once)
    records = list(lake_records(settings, ["signals"], None, None))
    assert len(records) == len(by_topic["signals"]) - lost
    assert [r[2] for r in records] == sorted(r[2] for r in records)
    # training's column reader too
    table = read_columns(settings.lake, "signals", ["event_id"], settings)
    assert table.num_rows == len(by_topic["signals"]) - lost
    assert len(skipped_files()) == before + 1


def test_a_topic_with_only_unreadable_files_reads_as_empty(tmp_path: Path) -> None:
    store, _ = _lake(tmp_path / "lake")
    for info in list_files(store, "outcomes"):
        Path(store.uri(str(info["key"]))).write_bytes(b"PAR1garbage")
    table = read_topic(str(store.root), "outcomes", store=store)
    assert table.num_rows == 0 and "signal_id" in table.column_names


def test_check_finds_unreadable_files_gaps_and_overlaps(tmp_path: Path) -> None:
    store, by_topic = _lake(tmp_path / "lake")
    clean = check_lake(store)
    assert clean.findings == [] and clean.rows == len(EVENTS)

    _truncate(store, "bars")
    bars = by_topic["bars"]
    # an overlap: offsets 5..9 written again under another name (as a foreign writer would)
    write_batch(store, "bars", 0, _rows(bars[5:10], 0, 5))
    # a gap: signals offsets 3..4 deleted from the lake
    sig = by_topic["signals"]
    for info in list_files(store, "signals"):
        Path(store.uri(str(info["key"]))).unlink()
    write_batch(store, "signals", 0, _rows(sig[:3], 0, 0))
    write_batch(store, "signals", 0, _rows(sig[5:], 0, 5))
    # a dead-lettered record leaves a gap the check explains: outcomes offset 2 -> dlq
    out = by_topic["outcomes"]
    for info in list_files(store, "outcomes"):
        Path(store.uri(str(info["key"]))).unlink()
    write_batch(store, "outcomes", 0, _rows(out[:2], 0, 0))
    write_batch(store, "outcomes", 0, _rows(out[3:], 0, 3))
    letter = dead_letter(out[2].ts_event, "bad", offset=2).model_copy(
        update={"source_topic": "p.outcomes", "partition": 0}
    )
    write_batch(store, "dlq", 0, _rows([letter], 0, 0))

    report = check_lake(store)
    kinds = sorted((f.kind, f.topic) for f in report.findings)
    # the unreadable file's offsets are missing too: a gap in bars as well
    assert kinds == [
        ("gap", "bars"),
        ("gap", "signals"),
        ("overlap", "bars"),
        ("unreadable", "bars"),
    ]
    by_kind = {(f.kind, f.topic): f for f in report.findings}
    assert by_kind[("gap", "signals")].detail == "offsets missing: 3-4"
    # 6 and 8 (ES) were in the unreadable file: only NQ's copies are seen twice
    assert by_kind[("overlap", "bars")].detail == "offsets in two files: 5, 7, 9"
    assert "is not a readable parquet file" in by_kind[("unreadable", "bars")].detail


def test_check_reports_a_file_whose_rows_do_not_match_its_name(tmp_path: Path) -> None:
    store, _ = _lake(tmp_path / "lake")
    info = list_files(store, "bars")[0]
    data = Path(store.uri(str(info["key"]))).read_bytes()
    fake = lake_key("bars", str(info["date"]), str(info["symbol"]), 0, 9000, 9100)
    store.put(fake, data)
    report = check_lake(store, ["bars"])
    assert [f.kind for f in report.findings] == ["misnamed", "overlap"]
    assert report.findings[0].detail.endswith(f"{fake} holds partitions [0] offsets 0-176")


def test_offset_runs() -> None:
    assert offset_runs([7, 1, 2, 3, 3]) == [(1, 3), (7, 7)]
    assert offset_runs([]) == []


def test_lake_check_cli_exits_non_zero_on_findings(tmp_path: Path) -> None:
    store, _ = _lake(tmp_path / "lake")
    runner = CliRunner()
    ok = runner.invoke(cli, ["lake", "check", "--lake", str(tmp_path / "lake")])
    assert ok.exit_code == 0, ok.output
    assert "unreadable 0" in ok.output and "gap 0" in ok.output
    uri, _ = _truncate(store, "outcomes")
    bad = runner.invoke(cli, ["lake", "check", "--lake", str(tmp_path / "lake")])
    assert bad.exit_code == 1
    assert uri in bad.output and "unreadable 1" in bad.output
